"""Our projection and SH against gsplat 1.5.3's pure-torch reference (CPU-safe private functions)."""

from __future__ import annotations

import pytest
import torch

from trillium.avatar.core.projection import covariance_from_quat_scale, project_gaussians, quat_to_rotmat
from trillium.avatar.core.sh import sh_to_color

from .helpers import front_camera, random_scene

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_gsplat_torch_reference(antialiased: bool) -> None:
    scene = random_scene(300, seed=1, spread=1.2)
    width, height = 96, 72
    viewmat, K = front_camera(width, height)
    ours = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], torch.ones(300), viewmat, K, width, height,
        antialiased=antialiased,
    )  # fmt: skip
    covars = covariance_from_quat_scale(scene["quats"], scene["scales"])
    radii, means2d, depths, conics, comp = torch_impl._fully_fused_projection(
        scene["means"], covars, viewmat[None], K[None], width, height, calc_compensations=antialiased
    )
    both = (radii[0] > 0).all(-1) & ours.visible
    assert int(both.sum()) > 100
    # gsplat's tolerances for means2d / depths / conics (rtol = atol = 1e-4), radii within 1 pixel
    torch.testing.assert_close(ours.means2d[both], means2d[0][both], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.depths, depths[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.conics[both], conics[0][both], rtol=1e-4, atol=1e-4)
    assert (ours.radii[both] - radii[0][both]).abs().max() <= 1
    if antialiased:
        torch.testing.assert_close(ours.opacities[both], comp[0][both], rtol=1e-4, atol=1e-5)
    # everything gsplat culls we cull too (our bound is opacity-aware, so we may cull more)
    assert not (ours.visible & ~(radii[0] > 0).any(-1)).any()


def test_quaternion_convention_matches_gsplat() -> None:
    quats = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(quat_to_rotmat(quats), torch_impl._quat_to_rotmat(quats), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_gsplat(degree: int) -> None:
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(64, 3, generator=g)
    coeffs = torch.randn(64, 16, 3, generator=g)
    expected = torch.clamp(torch_impl._spherical_harmonics(degree, dirs, coeffs) + 0.5, min=0.0)
    torch.testing.assert_close(sh_to_color(degree, dirs, coeffs), expected, rtol=1e-4, atol=1e-5)


def test_culls_behind_camera_and_outside_image() -> None:
    viewmat, K = front_camera(64, 64)
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [50.0, 0.0, 0.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1)
    out = project_gaussians(means, quats, torch.full((3, 3), 0.05), torch.ones(3), viewmat, K, 64, 64)
    assert out.visible.tolist() == [True, False, False]
    assert torch.isfinite(out.conics).all() and torch.isfinite(out.means2d).all()


def test_faint_gaussians_are_culled_by_opacity() -> None:
    viewmat, K = front_camera(64, 64)
    means, quats = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1)
    opacities = torch.tensor([0.5 / 255, 2.0 / 255])
    out = project_gaussians(means, quats, torch.full((2, 3), 0.05), opacities, viewmat, K, 64, 64)
    assert out.visible.tolist() == [False, True]
