"""The shipped anny-head avatar: a valid asset on the anny template whose mouth follows jawOpen."""

from __future__ import annotations

from pathlib import Path

import torch

from trillium.avatar.core import bind_to_world, load_asset, load_template, triangle_frames

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_avatar_embeds_the_template_and_opens_its_mouth():
    asset = load_asset(ASSETS / "avatars" / "anny-head" / "avatar.safetensors")
    rig = load_template(ASSETS / "templates" / "anny-head" / "template.safetensors")
    assert asset.template.name == "anny-head" and len(asset.gaussians) == len(rig.faces) == 9014
    assert asset.extra["licence"] == "CC0-1.0"
    assert torch.equal(asset.template_vertices, rig.template) and torch.equal(asset.template_faces, rig.faces)
    assert asset.blendshape_names == rig.blendshape_names
    torch.testing.assert_close(asset.blendshapes, rig.blendshapes)

    jaw_open = asset.blendshapes[asset.blendshape_names.index("jawOpen")]
    rest = bind_to_world(asset.gaussians, triangle_frames(asset.template_vertices, asset.template_faces))
    opened = bind_to_world(
        asset.gaussians, triangle_frames(asset.template_vertices + jaw_open, asset.template_faces)
    )
    drop = opened.means[:, 1] - rest.means[:, 1]
    lips = rest.colors[:, 0] - rest.colors[:, 1] > 0.3  # red-painted lip and tongue Gaussians
    assert lips.sum() > 50
    assert float(drop[lips].min()) < -0.02 and float(drop[~lips].max()) < 0.005
