"""Build the default avatar: procedural head, one Gaussian per triangle (GaussianAvatars, arXiv 2312.02069).

Colours are painted by region (skin, lips, eyes) so expressions are visible; each Gaussian is a flat
disc spanning its triangle (scale 0.7 k along the edges, 0.15 k along the normal), nearly opaque.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from trillium.avatar.core import AvatarAsset, TemplateRef, init_one_per_triangle, procedural_head, save_asset
from trillium.avatar.core.sh import rgb_to_sh0

SKIN, LIPS, EYES, HAIR = (0.86, 0.66, 0.55), (0.72, 0.25, 0.28), (0.12, 0.10, 0.10), (0.25, 0.17, 0.12)
COMMAND = "python -m trillium.avatar.service.build_default_avatar --out assets/avatars/procedural-head"


def face_colours(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] RGB per triangle from its centroid position (the head faces +z, +y is up)."""
    centre = vertices[faces].mean(dim=1)
    x, y, z = centre.unbind(-1)
    colours = torch.tensor(SKIN).expand(len(faces), 3).clone()
    colours[(y > 0.055) | (z < -0.03)] = torch.tensor(HAIR)
    colours[(z > 0.06) & (y < -0.033) & (y > -0.058) & (x.abs() < 0.028)] = torch.tensor(LIPS)
    colours[(z > 0.05) & (y > 0.01) & (y < 0.04) & ((x.abs() - 0.03).abs() < 0.015)] = torch.tensor(EYES)
    return colours


def default_avatar(subdivisions: int = 3) -> AvatarAsset:
    rig = procedural_head(subdivisions)
    gaussians = init_one_per_triangle(len(rig.faces), opacity=0.95)
    scales = torch.log(torch.tensor([0.7, 0.15, 0.7])).expand(len(rig.faces), 3).clone()
    gaussians = replace(
        gaussians, local_log_scales=scales, sh0=rgb_to_sh0(face_colours(rig.template, rig.faces))
    )
    return AvatarAsset(
        template=TemplateRef("procedural_head", len(rig.template), len(rig.faces)),
        gaussians=gaussians,
        template_vertices=rig.template,
        template_faces=rig.faces,
        blendshape_names=rig.blendshape_names,
        blendshapes=rig.blendshapes,
        extra={"kind": "head", "subdivisions": subdivisions, "licence": "Apache-2.0", "provenance": COMMAND},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--subdivisions", type=int, default=3, help="icosphere subdivisions of the head mesh")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "avatar.safetensors"
    save_asset(default_avatar(args.subdivisions), path)
    path.chmod(0o644)  # a shipped asset, readable by the serving user
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
