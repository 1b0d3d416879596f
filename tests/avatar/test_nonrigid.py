"""TaoAvatar-style teacher -> student distillation of pose-dependent deformation (arXiv 2503.17032)."""

from __future__ import annotations

import pytest
import torch

from trillium.avatar.core import procedural_head
from trillium.avatar.core.nonrigid import (
    MLPStudent,
    StudentConfig,
    TeacherConfig,
    UVTeacher,
    distill,
    offset_error,
    sphere_uv,
    synthetic_nonrigid_offsets,
    train_teacher,
)


def _poses(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, generator=g) * torch.tensor([0.4, 0.6, 0.8]) - torch.tensor([0.0, 0.3, 0.4])


def test_synthetic_offsets_vanish_at_rest_and_are_nonlinear_in_the_jaw():
    template = procedural_head(1).template
    assert float(synthetic_nonrigid_offsets(template, torch.zeros(1, 3)).abs().max()) == 0.0
    jaw = synthetic_nonrigid_offsets(template, torch.tensor([[0.1, 0.0, 0.0], [0.2, 0.0, 0.0]]))
    assert float(jaw[0].abs().max()) > 0
    torch.testing.assert_close(jaw[1], 4 * jaw[0])


def test_sphere_uv_range_and_shapes():
    rig = procedural_head(1)
    uv = sphere_uv(rig.template)
    assert uv.shape == (rig.template.shape[0], 2)
    assert float(uv.abs().max()) <= 1.0
    teacher = UVTeacher(TeacherConfig(pose_dim=3, channels=4, uv_size=8), uv)
    assert teacher.offset_map(torch.zeros(2, 3)).shape == (2, 3, 8, 8)
    assert teacher(torch.zeros(2, 3)).shape == (2, rig.template.shape[0], 3)
    with pytest.raises(ValueError, match="pose"):
        teacher(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="uv_size"):
        TeacherConfig(pose_dim=3, uv_size=12)


def test_student_compensation_is_a_linear_pose_corrective():
    student = MLPStudent(StudentConfig(pose_dim=3, num_vertices=5, hidden=8))
    with torch.no_grad():
        student.mlp[-1].weight.zero_()
        student.mlp[-1].bias.zero_()
        student.compensation.normal_()
    a, b = torch.randn(1, 3), torch.randn(1, 3)
    torch.testing.assert_close(student(a + 2 * b), student(a) + 2 * student(b), atol=1e-5, rtol=1e-5)
    assert MLPStudent(StudentConfig(pose_dim=3, num_vertices=5, compensation=False)).compensation is None


def test_teacher_learns_and_student_distils_it():
    torch.manual_seed(0)
    rig = procedural_head(1)
    poses = _poses(128, seed=0)
    truth = synthetic_nonrigid_offsets(rig.template, poses)
    teacher = UVTeacher(TeacherConfig(pose_dim=3, channels=8, uv_size=16), sphere_uv(rig.template))
    untrained_teacher_error = offset_error(teacher, truth, poses)
    train_teacher(teacher, poses, truth, steps=150, progress=False)
    assert offset_error(teacher, truth, poses) < 0.5 * untrained_teacher_error

    student = MLPStudent(StudentConfig(pose_dim=3, num_vertices=rig.template.shape[0], hidden=32))
    held_out = _poses(64, seed=1)
    untrained = offset_error(student, teacher, held_out)
    losses = distill(teacher, student, poses, steps=300, progress=False)
    trained = offset_error(student, teacher, held_out)
    teacher_scale = offset_error(teacher, torch.zeros_like(truth[:64]), held_out)
    assert losses[-1] < 0.1 * losses[0]
    assert trained < 0.2 * untrained
    assert trained < 0.2 * teacher_scale
