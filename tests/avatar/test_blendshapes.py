"""Blendshapes + LBS and the procedural head."""

from __future__ import annotations

import math

import pytest
import torch

from trillium.avatar.core import (
    apply_blendshapes,
    deform,
    icosphere,
    joint_transforms,
    lip_vertex_ids,
    procedural_head,
)
from trillium.avatar.core.rotations import axis_angle_to_rotmat


def test_rodrigues_quarter_turn_about_x() -> None:
    rot = axis_angle_to_rotmat(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(rot, expected)
    torch.testing.assert_close(axis_angle_to_rotmat(torch.zeros(3)), torch.eye(3))


def test_blendshapes_are_linear_in_coefficients() -> None:
    g = torch.Generator().manual_seed(0)
    template, shapes = torch.randn(10, 3, generator=g), torch.randn(4, 10, 3, generator=g)
    e = torch.tensor([0.5, 0.0, -1.0, 2.0])
    expected = template + 0.5 * shapes[0] - shapes[2] + 2.0 * shapes[3]
    torch.testing.assert_close(apply_blendshapes(template, shapes, e), expected)
    batch = apply_blendshapes(template, shapes, torch.stack([e, torch.zeros(4)]))
    torch.testing.assert_close(batch[1], template)
    with pytest.raises(ValueError, match="coefficients"):
        apply_blendshapes(template, shapes, torch.zeros(3))


def test_lbs_rotates_jaw_vertices_about_the_jaw_joint() -> None:
    rig = procedural_head(2, dtype=torch.float64)
    angle = 0.3
    posed = deform(
        rig, torch.zeros(len(rig.blendshape_names), dtype=torch.float64), rig.pose(jaw=(angle, 0, 0))
    )
    rot = axis_angle_to_rotmat(torch.tensor([angle, 0.0, 0.0], dtype=torch.float64))
    hinge = rig.joints[1]
    w = rig.skin_weights[:, 1:2]
    expected = (1 - w) * rig.template + w * ((rig.template - hinge) @ rot.T + hinge)
    torch.testing.assert_close(posed, expected)
    assert (posed - rig.template).norm(dim=-1).max() > 0.01


def test_neck_rotation_moves_head_rigidly_and_zero_pose_is_identity() -> None:
    rig = procedural_head(2, dtype=torch.float64)
    zeros = torch.zeros(len(rig.blendshape_names), dtype=torch.float64)
    torch.testing.assert_close(deform(rig, zeros, rig.pose()), rig.template)
    posed = deform(rig, zeros, rig.pose(neck=(0.0, 0.8, 0.2)))
    dist = torch.cdist(rig.template, rig.template)
    torch.testing.assert_close(torch.cdist(posed, posed), dist)
    transforms = joint_transforms(rig.joints, rig.parents, rig.pose(neck=(0.0, 0.8, 0.2)))
    torch.testing.assert_close(transforms[1], transforms[0])  # the jaw inherits the neck's motion


def test_jaw_open_lowers_the_chin_and_smiles_are_mirrored() -> None:
    rig = procedural_head(3)
    chin = int(torch.argmin(rig.template[:, 1] - rig.template[:, 2]))  # low and forward
    opened = deform(rig, rig.coefficients(jawOpen=1.0))
    assert float(opened[chin, 1] - rig.template[chin, 1]) < -0.01
    left = rig.blendshapes[rig.blendshape_names.index("mouthSmileLeft")]
    right = rig.blendshapes[rig.blendshape_names.index("mouthSmileRight")]
    assert left[:, 1].max() > 0.005
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(left.abs().sum(), right.abs().sum(), rtol=1e-4, atol=0)
    assert float((left * mirror).sum(0)[0]) == pytest.approx(float(right.sum(0)[0]), rel=1e-4)
    with pytest.raises(ValueError, match="unknown blendshape"):
        rig.coefficients(jawClose=1.0)


def test_icosphere_counts_and_outward_faces() -> None:
    for s in range(3):
        vertices, faces = icosphere(s)
        assert vertices.shape[0] == 10 * 4**s + 2 and faces.shape[0] == 20 * 4**s
        torch.testing.assert_close(vertices.norm(dim=-1), torch.ones(vertices.shape[0]))
        v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
        assert (torch.linalg.cross(v1 - v0, v2 - v0) * (v0 + v1 + v2)).sum(-1).min() > 0


def test_lip_vertices_are_on_the_front_near_the_mouth() -> None:
    rig = procedural_head(3)
    ids = lip_vertex_ids(rig.template)
    assert 5 <= ids.numel() < rig.template.shape[0] // 10
    assert (rig.template[ids, 2] > 0.04).all()


def test_rodrigues_is_differentiable_at_zero_and_matches_the_exact_formula():
    import torch

    from trillium.avatar.core.rotations import axis_angle_to_rotmat

    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rotation = axis_angle_to_rotmat(zero)
    assert torch.equal(rotation.detach(), torch.eye(3, dtype=torch.float64))
    rotation[1, 0].backward()  # d R[1,0] / d r_z = 1 for R ≈ I + [r]x
    assert zero.grad.tolist() == [0.0, 0.0, 1.0]
    torch.autograd.gradcheck(
        axis_angle_to_rotmat, (torch.tensor([1e-6, -2e-6, 3e-7], dtype=torch.float64, requires_grad=True),)
    )
    r = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    angle = r.norm()
    k = r / angle
    skew = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    exact = torch.eye(3, dtype=torch.float64) + torch.sin(angle) * skew + (1 - torch.cos(angle)) * skew @ skew
    assert torch.allclose(axis_angle_to_rotmat(r), exact, atol=1e-12)
