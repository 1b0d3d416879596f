"""The avatar asset: one versioned safetensors file.

Layout (``format = "trillium-avatar"``, ``version = 1``):

- header metadata (strings): ``format``, ``version`` and ``avatar``, a JSON object with the template
  reference ``{"name", "num_vertices", "num_faces"}``, ``blendshape_names``, ``networks`` (names)
  and free-form ``extra``;
- tensors: ``gaussians.parents`` [N] int64, ``gaussians.local_means`` [N, 3],
  ``gaussians.local_log_scales`` [N, 3], ``gaussians.local_quats`` [N, 4] (wxyz),
  ``gaussians.opacity_logits`` [N], ``gaussians.sh0`` [N, 3]; optional ``template.vertices`` [V, 3]
  and ``template.faces`` [F, 3]; ``blendshapes.offsets`` [E, V, 3] when blendshape names are given;
  ``networks.<name>.<parameter>`` for each network's state dict.

``load_asset`` validates everything and raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from trillium.avatar.core.binding import BoundGaussians

FORMAT = "trillium-avatar"
VERSION = 1
_GAUSSIAN_FIELDS = {
    "parents": 1,
    "local_means": 3,
    "local_log_scales": 3,
    "local_quats": 4,
    "opacity_logits": 0,
    "sh0": 3,
}


@dataclass(frozen=True)
class TemplateRef:
    """Which mesh the Gaussians are bound to (the mesh itself may be embedded or shipped separately)."""

    name: str
    num_vertices: int
    num_faces: int


@dataclass(frozen=True)
class AvatarAsset:
    """Everything needed to animate and render one avatar.

    Attributes:
        template: reference to the bound mesh.
        gaussians: the bound Gaussians (parents index ``template`` faces).
        template_vertices: [V, 3] or None; template_faces: [F, 3] long or None (embedded mesh).
        blendshape_names: E names; blendshapes: [E, V, 3] offsets or None.
        networks: name -> state dict (e.g. deformation MLPs).
        extra: JSON-serialisable metadata.
    """

    template: TemplateRef
    gaussians: BoundGaussians
    template_vertices: Tensor | None = None
    template_faces: Tensor | None = None
    blendshape_names: tuple[str, ...] = ()
    blendshapes: Tensor | None = None
    networks: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def save_asset(asset: AvatarAsset, path: str | Path) -> None:
    """Validate and write ``asset`` to ``path`` (one safetensors file)."""
    tensors = _to_tensors(asset)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "avatar": json.dumps(
            {
                "template": vars(asset.template),
                "blendshape_names": list(asset.blendshape_names),
                "networks": sorted(asset.networks),
                "extra": asset.extra,
            }
        ),
    }
    _validate(tensors, metadata)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_asset(path: str | Path) -> AvatarAsset:
    """Read and validate an asset; raises ``ValueError`` naming what is wrong."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable safetensors avatar file ({error})") from error
    info = _validate(tensors, metadata)
    gaussians = BoundGaussians(**{name: tensors[f"gaussians.{name}"] for name in _GAUSSIAN_FIELDS})
    networks: dict[str, dict[str, Tensor]] = {name: {} for name in info["networks"]}
    for key, value in tensors.items():
        if key.startswith("networks."):
            name, _, parameter = key[len("networks.") :].partition(".")
            networks[name][parameter] = value
    return AvatarAsset(
        template=TemplateRef(**info["template"]),
        gaussians=gaussians,
        template_vertices=tensors.get("template.vertices"),
        template_faces=tensors.get("template.faces"),
        blendshape_names=tuple(info["blendshape_names"]),
        blendshapes=tensors.get("blendshapes.offsets"),
        networks=networks,
        extra=info["extra"],
    )


def _to_tensors(asset: AvatarAsset) -> dict[str, Tensor]:
    tensors = {
        f"gaussians.{name}": getattr(asset.gaussians, name).detach().cpu() for name in _GAUSSIAN_FIELDS
    }
    optional = {
        "template.vertices": asset.template_vertices,
        "template.faces": asset.template_faces,
        "blendshapes.offsets": asset.blendshapes,
    }
    tensors.update({k: v.detach().cpu() for k, v in optional.items() if v is not None})
    for name, state in asset.networks.items():
        if not name or "." in name:
            raise ValueError(f"network name {name!r} must be non-empty and contain no '.'")
        tensors.update({f"networks.{name}.{k}": v.detach().cpu() for k, v in state.items()})
    return tensors


def _validate(tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """Check header and tensors; return the parsed ``avatar`` JSON."""
    if metadata.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT!r}, got {metadata.get('format')!r}")
    if metadata.get("version") != str(VERSION):
        raise ValueError(f"version: this reader supports version {VERSION}, got {metadata.get('version')!r}")
    try:
        info = json.loads(metadata["avatar"])
        template = info["template"]
        num_vertices, num_faces = int(template["num_vertices"]), int(template["num_faces"])
        str(template["name"])
        names = list(info["blendshape_names"])
        info.setdefault("extra", {})
        info.setdefault("networks", [])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"avatar metadata: missing or malformed field ({error})") from error

    for name in _GAUSSIAN_FIELDS:
        if f"gaussians.{name}" not in tensors:
            raise ValueError(f"missing tensor 'gaussians.{name}'")
    n = tensors["gaussians.parents"].shape[0] if tensors["gaussians.parents"].ndim == 1 else -1
    expected = {f"gaussians.{k}": (n,) if d <= 1 else (n, d) for k, d in _GAUSSIAN_FIELDS.items()}
    if num_vertices:
        expected["template.vertices"] = (num_vertices, 3)
    expected["template.faces"] = (num_faces, 3)
    if names:
        expected["blendshapes.offsets"] = (len(names), num_vertices, 3)
        if "blendshapes.offsets" not in tensors:
            raise ValueError("missing tensor 'blendshapes.offsets' (blendshape_names are set)")
    for key, shape in expected.items():
        if key in tensors and tuple(tensors[key].shape) != shape:
            raise ValueError(f"tensor {key!r}: expected shape {list(shape)}, got {list(tensors[key].shape)}")
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"tensor {key!r} contains NaN or infinite values")
    parents = tensors["gaussians.parents"]
    if parents.is_floating_point():
        raise ValueError(f"tensor 'gaussians.parents' must be integer, got {parents.dtype}")
    if parents.numel() and (int(parents.min()) < 0 or int(parents.max()) >= num_faces):
        raise ValueError(f"tensor 'gaussians.parents' indexes outside the template's {num_faces} faces")
    if "template.faces" in tensors:
        faces = tensors["template.faces"]
        if faces.is_floating_point() or (faces.numel() and int(faces.max()) >= max(num_vertices, 1)):
            raise ValueError("tensor 'template.faces' must be integer vertex indices below num_vertices")
    return info
