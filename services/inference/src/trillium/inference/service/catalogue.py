"""``ModelInfo`` of the configured models (see :mod:`.models` for the registry).

Listing reads only ``config.json`` (no weights are loaded), so ListModels stays cheap. The revision
is a digest of the weights files so clients can tell builds apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from trillium.inference.v1 import inference_pb2

MODELS_DIR_ENV = "TRILLIUM_MODELS_DIR"
_MODALITIES = {
    "text": inference_pb2.MODALITY_TEXT,
    "image": inference_pb2.MODALITY_IMAGE,
    "video": inference_pb2.MODALITY_VIDEO,
    "audio": inference_pb2.MODALITY_AUDIO,
}


def default_models_dir() -> Path:
    """``$TRILLIUM_MODELS_DIR``, else ``assets/models`` of the working directory."""
    return Path(os.environ.get(MODELS_DIR_ENV) or Path.cwd() / "assets" / "models")


def _revision(folder: Path) -> str:
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return ""
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _modalities(folder: Path) -> list[str]:
    """Modalities a model accepts: from the processor config it ships, else text only."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.exists():
            declared = json.loads(path.read_text()).get("modalities")
            if declared:
                return [m for m in declared if m in _MODALITIES]
    return ["text"]


def model_info(spec, loaded_config: dict | None = None) -> inference_pb2.ModelInfo:
    """``ModelInfo`` of a configured model (:class:`~.models.ModelSpec`): its ``config.json``, or the
    loaded model's config (a GGUF file has no ``config.json``)."""
    folder = spec.path.parent if spec.is_gguf else spec.path
    config = loaded_config
    if config is None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
    config = config or {}
    heads = int(config.get("num_attention_heads") or 0)
    head_dim = int(config.get("head_dim") or (int(config.get("hidden_size", 0)) // heads if heads else 0))
    return inference_pb2.ModelInfo(
        name=spec.name,
        revision="" if spec.is_gguf else _revision(folder),
        modalities=[_MODALITIES[m] for m in _modalities(folder)],
        max_context_tokens=int(spec.max_context or config.get("max_position_embeddings") or 0),
        architecture=(config.get("architectures") or [config.get("model_type", "")])[0],
        num_layers=int(config.get("num_hidden_layers") or 0),
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        dtype=spec.dtype,
        backend="local",
    )
