"""The model registry: which models this server serves, checked at start-up and loaded before SERVING.

Models come from a YAML file (``--models-config``, env ``TRILLIUM_MODELS_CONFIG``)::

    models:
      - name: smollm2                 # the name clients send (GenerateRequest.model)
        path: ~/.cache/trillium/models/smollm2-135m-instruct   # a folder or a .gguf file;
                                      # ~ and $VARS expand, relative paths start at this file's folder
        kind: causal-lm               # causal-lm | av-tiny
        dtype: float32                # float32 | bfloat16 | float16
        device: auto                  # cpu | cuda | cuda:N | auto (CUDA when present)
        max_context: 8192             # default: the config's max_position_embeddings
        chat_template: true           # wrap a text prompt in the tokenizer's chat template

or, without a file, from every folder of ``--models-dir`` that holds a ``config.json`` (kind
``av-tiny`` when it ships ``processor_config.json``, else ``causal-lm``; CPU, float32).

:func:`check_checkpoint` runs before the server binds: a missing folder, config or weights file, or a
safetensors file whose header or size is wrong, stops start-up with a message naming the file.
Loading itself (:func:`load_model`) happens during warm-up, offline, while health is NOT_SERVING.
``kind: qwen2-vl`` is recognised and refused: the engine's packed step has 1-D positions only, and
Qwen2-VL needs M-RoPE's 3-D positions (kvcompress's single-request path has them).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["KINDS", "ModelSpec", "check_checkpoint", "load_specs", "resolve_device"]

KINDS = ("causal-lm", "av-tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_KEYS = {"name", "path", "kind", "dtype", "device", "max_context", "chat_template"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    kind: str = "causal-lm"
    dtype: str = "float32"
    device: str = "cpu"
    max_context: int | None = None
    chat_template: bool = True

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"


def _spec(entry: Any, where: str, base: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a mapping with name, path and kind")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    for key in ("name", "path"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValueError(f"{where}.{key}: must be a non-empty string")
    kind = entry.get("kind", "causal-lm")
    if kind == "qwen2-vl":
        raise ValueError(f"{where}.kind: qwen2-vl is not served by the engine yet (M-RoPE positions)")
    if kind not in KINDS:
        raise ValueError(f"{where}.kind: must be one of {list(KINDS)}, got {kind!r}")
    dtype = entry.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{where}.dtype: must be one of {list(DTYPES)}, got {dtype!r}")
    max_context = entry.get("max_context")
    if max_context is not None and (not isinstance(max_context, int) or max_context < 1):
        raise ValueError(f"{where}.max_context: must be a positive integer, got {max_context!r}")
    device = str(entry.get("device", "cpu"))
    resolve_device(device, where=f"{where}.device", check_present=False)
    path = Path(os.path.expandvars(entry["path"])).expanduser()
    return ModelSpec(
        name=entry["name"],
        path=path if path.is_absolute() else base / path,
        kind=kind,
        dtype=dtype,
        device=device,
        max_context=max_context,
        chat_template=bool(entry.get("chat_template", True)),
    )


def load_specs(config_file: str, models_dir: Path) -> list[ModelSpec]:
    """The configured models (YAML file), else every model folder of ``models_dir``."""
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ValueError(f"models_config: {path} does not exist")
        document = yaml.safe_load(path.read_text()) or {}
        entries = document.get("models") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"models_config: {path} must hold a non-empty 'models' list")
        specs = [_spec(entry, f"{path.name}: models[{i}]", path.parent) for i, entry in enumerate(entries)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"models_config: {path} names a model twice ({names})")
        return specs
    if not models_dir.is_dir():
        return []
    specs = []
    for folder in sorted(p for p in models_dir.iterdir() if (p / "config.json").is_file()):
        kind = "av-tiny" if (folder / "processor_config.json").is_file() else "causal-lm"
        specs.append(ModelSpec(name=folder.name, path=folder, kind=kind))
    return specs


def resolve_device(name: str, *, where: str = "device", check_present: bool = True) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present) as a device that exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{where}: must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: must be cpu, cuda, cuda:N or auto, got {name!r}")
    if check_present and device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ValueError(f"{where}: {name} requested but this machine has {count} CUDA devices")
    return device


def _check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte it describes (catches truncation)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        header_length = struct.unpack("<Q", raw)[0]
        if header_length > size - 8:
            raise ValueError(
                f"{path}: corrupt safetensors file (header of {header_length} bytes, file {size})"
            )
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path}: corrupt safetensors header") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_length + end > size:
        raise ValueError(f"{path}: truncated ({size} bytes, its header describes {8 + header_length + end})")


def check_checkpoint(spec: ModelSpec) -> None:
    """Fail before start-up, naming the file, if ``spec``'s checkpoint cannot load."""
    path = spec.path
    if spec.is_gguf:
        if not path.is_file():
            raise ValueError(f"model {spec.name!r}: {path} does not exist")
        return
    if not (path / "config.json").is_file():
        raise ValueError(f"model {spec.name!r}: {path / 'config.json'} does not exist")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"model {spec.name!r}: {path} holds no *.safetensors weights")
    for file in weights:
        _check_safetensors(file)
    if spec.kind == "av-tiny" and not (path / "processor_config.json").is_file():
        raise ValueError(
            f"model {spec.name!r}: {path / 'processor_config.json'} does not exist (kind av-tiny)"
        )
    if (
        spec.kind == "causal-lm"
        and not (path / "tokenizer.json").is_file()
        and not (path / "tokenizer_config.json").is_file()
    ):
        raise ValueError(f"model {spec.name!r}: {path} ships no tokenizer (tokenizer.json)")
