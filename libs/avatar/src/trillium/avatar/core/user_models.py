"""User-supplied FLAME and SMPL-X model files behind the template interface (:class:`BlendshapeRig`).

Neither model is shipped (their licences forbid it); users point these loaders at their own copy.
No ``smplx`` package and no chumpy: ``.npz`` files, or ``.pkl`` files holding only numpy arrays and
scipy sparse matrices (see :mod:`trillium.avatar.core.model_files`).

Keys read (the official files' layout; V vertices, J joints, F triangles):

=================  ==================  ===============================================================
key                shape               use
=================  ==================  ===============================================================
``v_template``     [V, 3]              mean mesh
``shapedirs``      [V, 3, S + E]       S identity components, then E expression components
``posedirs``       [V, 3, 9 (J - 1)]   pose correctives (optional)
``J_regressor``    [J, V]              joints from the identity-shaped mesh (dense or sparse)
``kintree_table``  [2, J]              row 0: parent ids (root: -1 or 2^32 - 1), row 1: joint ids
``weights``        [V, J]              skinning weights
``f``              [F, 3]              triangles
=================  ==================  ===============================================================

FLAME (Li et al., SIGGRAPH Asia 2017) has J = 5 (root, neck, jaw, eyes) and S = 300 identity
components then up to 100 expression ones. SMPL-X (Pavlakos et al., CVPR 2019) has J = 55 and
S = 300 + E = 100 (2020 files) or S = 10 + E = 10 (older files); the hand PCA keys are not read,
every joint takes a full axis-angle (``rig.pose(body_pose=...)``).

The rig follows each model's formulation ``v = T + S beta + E psi + P(theta)`` then linear blend
skinning, with one simplification: joints are regressed once from the identity-shaped mesh, while
FLAME and SMPL-X regress them from the expression-shaped mesh too (expressions then slightly move
the jaw and eye joints). Expression blendshapes are PCA components named ``expression_000``..., not
ARKit shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trillium.avatar.core.blendshapes import BlendshapeRig
from trillium.avatar.core.model_files import read_model_arrays
from trillium.avatar.core.template_asset import validate_rig

REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "kintree_table", "weights", "f")
OPTIONAL_KEYS = ("posedirs",)

FLAME_JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
FLAME_ROLES = {
    "root": "root",
    "neck": "neck",
    "head": "neck",
    "jaw": "jaw",
    "left_eye": "left_eye",
    "right_eye": "right_eye",
}
_FINGERS = [f"{finger}{k}" for finger in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3)]
SMPLX_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw",
    "left_eye_smplhf", "right_eye_smplhf",
    *[f"left_{name}" for name in _FINGERS], *[f"right_{name}" for name in _FINGERS],
)  # fmt: skip
SMPLX_ROLES = {
    "root": "pelvis",
    "neck": "neck",
    "head": "head",
    "jaw": "jaw",
    "left_eye": "left_eye_smplhf",
    "right_eye": "right_eye_smplhf",
    **{
        f"{side}_{joint}": f"{side}_{joint}"
        for side in ("left", "right")
        for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    },
}


def load_flame(
    path: str | Path, shape: Tensor | None = None, num_shape: int = 300, num_expressions: int = 100
) -> BlendshapeRig:
    """A FLAME model file as a rig: identity ``shape`` [<= num_shape] baked in, E expression shapes.

    Args:
        path: .npz or .pkl with the keys in the module docstring.
        shape: identity coefficients beta (None = mean shape).
        num_shape: identity components at the start of ``shapedirs`` (300 in FLAME files).
        num_expressions: expression components kept (at most what the file has after ``num_shape``).
    """
    arrays = read_model_arrays(path, "FLAME", REQUIRED_KEYS, OPTIONAL_KEYS)
    return _smpl_family_rig(
        arrays,
        name=Path(path).name,
        joint_names=FLAME_JOINT_NAMES,
        roles=FLAME_ROLES,
        num_shape=num_shape,
        num_expressions=num_expressions,
        shape=shape,
    )


def load_smplx(
    path: str | Path, shape: Tensor | None = None, num_shape: int | None = None, num_expressions: int = 100
) -> BlendshapeRig:
    """An SMPL-X model file as a rig (55 joints, expression shapes, optional pose correctives).

    Args:
        path: .npz (or arrays-only .pkl) with the keys in the module docstring.
        shape: identity coefficients beta (None = mean shape).
        num_shape: identity components at the start of ``shapedirs``; None = 300 when the file has
            more than 300 components, else 10 (older files with 10 shape + 10 expression).
        num_expressions: expression components kept.
    """
    arrays = read_model_arrays(path, "SMPL-X", REQUIRED_KEYS, OPTIONAL_KEYS)
    if num_shape is None:
        components = arrays["shapedirs"].shape[-1] if arrays["shapedirs"].ndim == 3 else 0
        num_shape = 300 if components > 300 else 10
    return _smpl_family_rig(
        arrays,
        name=Path(path).name,
        joint_names=SMPLX_JOINT_NAMES,
        roles=SMPLX_ROLES,
        num_shape=num_shape,
        num_expressions=num_expressions,
        shape=shape,
    )


def parents_from_kintree(kintree: np.ndarray, name: str) -> tuple[int, ...]:
    """Parent indices (-1 for the root) from a [2, J] kintree table (row 0 parent ids, row 1 joint ids)."""
    _require(
        kintree.ndim == 2 and kintree.shape[0] == 2,
        name,
        "kintree_table",
        f"expected [2, J], got {list(kintree.shape)}",
    )
    ids = [int(i) for i in kintree[1]]
    _require(ids == list(range(len(ids))), name, "kintree_table", "row 1 must list joint ids 0..J-1 in order")
    parents = []
    for parent in kintree[0].astype(np.int64):
        parents.append(int(parent) if 0 <= int(parent) < len(ids) else -1)
    _require(
        parents[0] == -1 and all(0 <= p < j for j, p in enumerate(parents) if j > 0),
        name,
        "kintree_table",
        f"joint 0 must be the only root and parents must come before children, got parents {parents}",
    )
    return tuple(parents)


def _smpl_family_rig(
    arrays: Mapping[str, np.ndarray],
    *,
    name: str,
    joint_names: Sequence[str],
    roles: Mapping[str, str],
    num_shape: int,
    num_expressions: int,
    shape: Tensor | None,
) -> BlendshapeRig:
    template = _float(arrays["v_template"], name, "v_template", 2)
    num_vertices = template.shape[0]
    _require(template.shape[1] == 3, name, "v_template", f"expected [V, 3], got {list(template.shape)}")
    parents = parents_from_kintree(np.asarray(arrays["kintree_table"]), name)
    num_joints = len(parents)
    _require(
        num_joints == len(joint_names),
        name,
        "kintree_table",
        f"has {num_joints} joints, this model has {len(joint_names)}",
    )
    shapedirs = _float(arrays["shapedirs"], name, "shapedirs", 3)
    _require(
        list(shapedirs.shape[:2]) == [num_vertices, 3],
        name,
        "shapedirs",
        f"expected [{num_vertices}, 3, components], got {list(shapedirs.shape)}",
    )
    _require(
        0 < num_shape < shapedirs.shape[2] and num_expressions >= 0,
        name,
        "shapedirs",
        f"has {shapedirs.shape[2]} components; need num_shape ({num_shape}) identity components and at "
        "least one expression component after them",
    )
    if shape is not None:
        beta = torch.as_tensor(shape, dtype=torch.float64).flatten()
        _require(
            beta.numel() <= num_shape,
            name,
            "shape",
            f"{beta.numel()} coefficients, the model has {num_shape}",
        )
        template = template + shapedirs[:, :, : beta.numel()] @ beta
    expressions = shapedirs[:, :, num_shape : num_shape + num_expressions].permute(2, 0, 1)
    regressor = _float(arrays["J_regressor"], name, "J_regressor", 2)
    _require(
        list(regressor.shape) == [num_joints, num_vertices],
        name,
        "J_regressor",
        f"expected [{num_joints}, {num_vertices}], got {list(regressor.shape)}",
    )
    weights = _float(arrays["weights"], name, "weights", 2)
    _require(
        list(weights.shape) == [num_vertices, num_joints],
        name,
        "weights",
        f"expected [{num_vertices}, {num_joints}], got {list(weights.shape)}",
    )
    faces = np.asarray(arrays["f"])
    _require(
        faces.ndim == 2 and faces.shape[1] == 3 and np.issubdtype(faces.dtype, np.integer),
        name,
        "f",
        f"expected integer [F, 3], got {faces.dtype} {list(faces.shape)}",
    )
    pose_correctives = None
    if "posedirs" in arrays:
        posedirs = _float(arrays["posedirs"], name, "posedirs", 3)
        expected = [num_vertices, 3, 9 * (num_joints - 1)]
        _require(
            list(posedirs.shape) == expected,
            name,
            "posedirs",
            f"expected {expected}, got {list(posedirs.shape)}",
        )
        pose_correctives = posedirs.permute(2, 0, 1).float()
    rig = BlendshapeRig(
        template=template.float(),
        faces=torch.from_numpy(faces.astype(np.int64)),
        blendshapes=expressions.float().contiguous(),
        blendshape_names=tuple(f"expression_{i:03d}" for i in range(expressions.shape[0])),
        joints=(regressor @ template).float(),
        parents=parents,
        joint_names=tuple(joint_names),
        skin_weights=weights.float(),
        joint_roles=dict(roles),
        pose_correctives=pose_correctives,
    )
    try:
        validate_rig(rig)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    return rig


def _float(value: np.ndarray, name: str, key: str, ndim: int) -> Tensor:
    array = np.asarray(value)
    _require(
        array.ndim == ndim and np.issubdtype(array.dtype, np.number),
        name,
        key,
        f"expected a {ndim}-D numeric array, got {array.dtype} {list(array.shape)}",
    )
    return torch.from_numpy(array.astype(np.float64))


def _require(condition: bool, name: str, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: key {key!r}: {message}")
