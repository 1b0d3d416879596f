"""GaussianAvatars triangle binding (arXiv 2312.02069) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from trillium.avatar.core import (
    BoundGaussians,
    bind_to_world,
    clone,
    init_one_per_triangle,
    procedural_head,
    prune,
    split,
    triangle_frames,
)
from trillium.avatar.core.projection import quat_to_rotmat
from trillium.avatar.core.rotations import axis_angle_to_rotmat, quat_multiply, rotmat_to_quat

RIGHT_TRIANGLE = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
FACE = torch.tensor([[0, 1, 2]])


def one_gaussian(mean, log_scale, quat, dtype=torch.float64) -> BoundGaussians:
    return BoundGaussians(
        parents=torch.tensor([0]),
        local_means=torch.tensor([mean], dtype=dtype),
        local_log_scales=torch.tensor([log_scale], dtype=dtype),
        local_quats=torch.tensor([quat], dtype=dtype),
        opacity_logits=torch.tensor([0.0], dtype=dtype),
        sh0=torch.zeros(1, 3, dtype=dtype),
    )


def test_right_triangle_frame_by_hand() -> None:
    frames = triangle_frames(RIGHT_TRIANGLE, FACE)
    # e = (1,0,0); n = e x (v2 - v0) = (0,0,1); b = e x n = (0,-1,0); columns (e, n, b)
    expected_r = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(frames.rotations[0], expected_r)
    assert float(torch.linalg.det(frames.rotations[0])) == pytest.approx(1.0)
    torch.testing.assert_close(frames.origins[0], torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    # k = (|v1 - v0| + |b . (v2 - v0)|) / 2 = (2 + 1) / 2
    assert float(frames.scales[0]) == pytest.approx(1.5)


def test_world_attributes_by_hand() -> None:
    q = [math.cos(0.25), math.sin(0.25), 0.0, 0.0]  # 0.5 rad about local x
    g = one_gaussian([1.0, 0.0, 0.5], [math.log(0.2), 0.0, math.log(2.0)], q)
    world = bind_to_world(g, triangle_frames(RIGHT_TRIANGLE, FACE))
    # mu' = k R mu + T = 1.5 * (1, -0.5, 0) + (2/3, 1/3, 0)
    torch.testing.assert_close(
        world.means[0], torch.tensor([1.5 + 2 / 3, -0.75 + 1 / 3, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(world.scales[0], torch.tensor([0.3, 1.5, 3.0], dtype=torch.float64))
    r_face = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    r_local = axis_angle_to_rotmat(torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(quat_to_rotmat(world.quats[0]), r_face @ r_local)
    assert float(world.opacities[0]) == pytest.approx(0.5)


def test_binding_follows_a_similarity_transform_of_the_mesh() -> None:
    rig = procedural_head(1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 60
    bound = BoundGaussians(
        parents=torch.randint(0, rig.faces.shape[0], (n,), generator=g),
        local_means=torch.randn(n, 3, generator=g, dtype=torch.float64),
        local_log_scales=torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3,
        local_quats=torch.randn(n, 4, generator=g, dtype=torch.float64),
        opacity_logits=torch.zeros(n, dtype=torch.float64),
        sh0=torch.zeros(n, 3, dtype=torch.float64),
    )
    rot = axis_angle_to_rotmat(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    shift, factor = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 1.7
    before = bind_to_world(bound, triangle_frames(rig.template, rig.faces))
    after = bind_to_world(bound, triangle_frames(factor * rig.template @ rot.T + shift, rig.faces))
    torch.testing.assert_close(after.means, factor * before.means @ rot.T + shift)
    torch.testing.assert_close(after.scales, factor * before.scales)
    torch.testing.assert_close(quat_to_rotmat(after.quats), rot @ quat_to_rotmat(before.quats))


def test_init_one_per_triangle_sits_on_centroids_with_scale_k() -> None:
    rig = procedural_head(1)
    bound = init_one_per_triangle(rig.faces.shape[0], generator=torch.Generator().manual_seed(0))
    frames = triangle_frames(rig.template, rig.faces)
    world = bind_to_world(bound, frames)
    assert len(bound) == rig.faces.shape[0]
    torch.testing.assert_close(world.means, frames.origins)
    torch.testing.assert_close(world.scales, frames.scales[:, None].expand(-1, 3))
    torch.testing.assert_close(world.opacities, torch.full((len(bound),), 0.1))
    torch.testing.assert_close(quat_to_rotmat(world.quats), frames.rotations, atol=1e-5, rtol=1e-5)


def test_clone_and_split_keep_parents_and_split_divides_scale() -> None:
    bound = init_one_per_triangle(4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, True, False])
    cloned = clone(bound, mask)
    assert cloned.parents.tolist() == [0, 1, 2, 3, 0, 2]
    children = split(bound, mask, num_children=2, generator=torch.Generator().manual_seed(1))
    assert children.parents.tolist() == [1, 3, 0, 0, 2, 2]
    torch.testing.assert_close(children.local_log_scales[2:], torch.full((4, 3), math.log(1 / 1.6)))
    assert not torch.equal(children.local_means[2], children.local_means[3])


def test_prune_never_leaves_a_triangle_without_a_gaussian() -> None:
    bound = clone(init_one_per_triangle(3), torch.tensor([True, True, False]))  # parents 0,1,2,0,1
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, -1.0])
    bound = BoundGaussians(**{**vars(bound), "opacity_logits": logits})
    pruned = prune(bound, torch.tensor([True, True, True, True, False]), num_triangles=3)
    # triangle 0 loses both -> keeps its most opaque (index 3); 1 keeps index 4; 2 keeps index 2
    assert sorted(pruned.opacity_logits.tolist()) == [-1.0, 2.0, 3.0]
    assert sorted(pruned.parents.tolist()) == [0, 1, 2]


def test_rotmat_quat_round_trip_including_half_turns() -> None:
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(200, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angles = torch.cat(
        [torch.rand(197, generator=g, dtype=torch.float64) * math.pi, torch.full((3,), math.pi)]
    )
    rots = axis_angle_to_rotmat(axis * angles[:, None])
    torch.testing.assert_close(quat_to_rotmat(rotmat_to_quat(rots)), rots)
    q1, q2 = rotmat_to_quat(rots[:100]), rotmat_to_quat(rots[100:])
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(q1, q2)), rots[:100] @ rots[100:])
