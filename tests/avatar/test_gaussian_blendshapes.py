"""Speaker-specific Gaussian blendshapes (GaussianTalker, arXiv 2404.14037): identity, linearity, grads."""

from __future__ import annotations

import math

import pytest
import torch

from trillium.avatar.core import (
    bind_to_world,
    procedural_head,
    random_bound_gaussians,
    render,
    triangle_frames,
)
from trillium.avatar.core.gaussian_blendshapes import (
    GaussianBlendshapeBasis,
    GaussianBlendshapeConfig,
    LatentPoseMLP,
    SpeakerGaussianBlendshapes,
    apply_gaussian_blendshapes,
    blend,
)

from .helpers import front_camera


def _scene(n: int = 12, seed: int = 0):
    rig = procedural_head(0)
    return rig, random_bound_gaussians(rig, n, torch.Generator().manual_seed(seed))


def _random_basis(n: int, kg: int, ka: int, seed: int = 1, scale: float = 0.1) -> GaussianBlendshapeBasis:
    g = torch.Generator().manual_seed(seed)
    return GaussianBlendshapeBasis(
        means=scale * torch.randn(kg, n, 3, generator=g),
        log_scales=scale * torch.randn(kg, n, 3, generator=g),
        rotations=scale * torch.randn(kg, n, 3, generator=g),
        opacity_logits=scale * torch.randn(ka, n, generator=g),
        sh0=scale * torch.randn(ka, n, 3, generator=g),
    )


def test_zero_basis_is_identity_for_any_latent():
    _, gaussians = _scene()
    model = SpeakerGaussianBlendshapes(GaussianBlendshapeConfig(num_gaussians=12, num_expressions=6))
    out = model(gaussians, torch.rand(6) * 3, torch.randn(3))
    for name in ("local_means", "local_log_scales", "local_quats", "opacity_logits", "sh0"):
        torch.testing.assert_close(getattr(out, name), getattr(gaussians, name), msg=name)
    assert torch.equal(out.parents, gaussians.parents)


def test_attributes_are_linear_in_the_latent():
    _, gaussians = _scene()
    basis = _random_basis(12, 4, 5)
    g = torch.Generator().manual_seed(3)
    zg1, zg2, za1, za2 = (torch.randn(k, generator=g) for k in (4, 4, 5, 5))

    def delta(zg, za, name):
        return getattr(apply_gaussian_blendshapes(gaussians, basis, zg, za), name) - getattr(gaussians, name)

    for name in ("local_means", "local_log_scales", "opacity_logits", "sh0"):
        torch.testing.assert_close(
            delta(zg1 + 2 * zg2, za1 + 2 * za2, name),
            delta(zg1, za1, name) + 2 * delta(zg2, za2, name),
            atol=1e-5, rtol=1e-5, msg=name,
        )  # fmt: skip


def test_rotation_delta_is_axis_angle_on_the_right():
    _, gaussians = _scene(n=1)
    gaussians = type(gaussians)(**{**vars(gaussians), "local_quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]])})
    basis = _random_basis(1, 1, 1, scale=0.0)
    basis = GaussianBlendshapeBasis(basis.means, basis.log_scales, torch.tensor([[[0.0, 0.0, 0.5]]]),
                                    basis.opacity_logits, basis.sh0)  # fmt: skip
    out = apply_gaussian_blendshapes(gaussians, basis, torch.tensor([2.0]), torch.zeros(1))
    expected = torch.tensor([[math.cos(0.5), 0.0, 0.0, math.sin(0.5)]])
    torch.testing.assert_close(out.local_quats * out.local_quats[:, :1].sign(), expected, atol=1e-6, rtol=0)


def test_batched_latents_give_batched_attributes():
    _, gaussians = _scene()
    out = apply_gaussian_blendshapes(gaussians, _random_basis(12, 4, 5), torch.randn(7, 4), torch.randn(7, 5))
    assert out.local_means.shape == (7, 12, 3)
    assert out.local_quats.shape == (7, 12, 4)
    assert out.opacity_logits.shape == (7, 12)
    single = apply_gaussian_blendshapes(gaussians, _random_basis(12, 4, 5), torch.zeros(4), torch.zeros(5))
    assert single.local_means.shape == (12, 3)


def test_blend_validates_shapes():
    with pytest.raises(ValueError, match="weights"):
        blend(torch.zeros(5, 3), torch.zeros(2, 5, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="deltas"):
        blend(torch.zeros(5, 3), torch.zeros(2, 4, 3), torch.zeros(2))


def test_latent_mlp_shapes_and_errors():
    config = GaussianBlendshapeConfig(
        num_gaussians=4, num_expressions=6, geometry_latent=8, appearance_latent=28
    )
    z_geo, z_app = LatentPoseMLP(config)(torch.rand(5, 6), torch.rand(5, 3))
    assert z_geo.shape == (5, 8) and z_app.shape == (5, 28)
    with pytest.raises(ValueError, match="expression"):
        LatentPoseMLP(config)(torch.rand(5, 7), torch.rand(5, 3))
    with pytest.raises(ValueError, match="jaw"):
        LatentPoseMLP(config)(torch.rand(5, 6), torch.rand(4, 3))
    with pytest.raises(ValueError, match="num_gaussians"):
        GaussianBlendshapeConfig(num_gaussians=0, num_expressions=6)


def test_gradients_reach_bases_and_latent_mlp_through_the_renderer():
    torch.manual_seed(0)
    rig, gaussians = _scene(n=30)
    gaussians = type(gaussians)(
        **{k: (v.double() if v.is_floating_point() else v) for k, v in vars(gaussians).items()}
    )
    model = SpeakerGaussianBlendshapes(GaussianBlendshapeConfig(num_gaussians=30, num_expressions=6)).double()
    with torch.no_grad():
        for p in (model.delta_means, model.delta_sh0, model.delta_log_scales):
            p.normal_(0, 0.05)
    local = model(gaussians, torch.rand(6, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    world = bind_to_world(local, triangle_frames(rig.template.double(), rig.faces))
    viewmat, K = front_camera(16, 16, distance=0.45, fov=30.0, dtype=torch.float64)
    out = render(world.means, world.quats, world.scales, world.opacities, world.colors, viewmat, K, 16, 16,
                 torch.ones(3, dtype=torch.float64), "torch")  # fmt: skip
    ((out.rgb - 0.3) ** 2).mean().backward()
    for name in ("delta_means", "delta_log_scales", "delta_rotations", "delta_opacity_logits", "delta_sh0"):
        grad = getattr(model, name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert float(model.latent.net[0].weight.grad.abs().sum()) > 0


def test_axis_angle_to_quat_matches_rodrigues_and_has_gradient_at_zero():
    from trillium.avatar.core.gaussian_blendshapes import axis_angle_to_quat
    from trillium.avatar.core.rotations import axis_angle_to_rotmat, rotmat_to_quat

    r = torch.randn(20, 3, dtype=torch.float64)
    q = axis_angle_to_quat(r)
    torch.testing.assert_close(q * q[:, :1].sign(), rotmat_to_quat(axis_angle_to_rotmat(r)))
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_quat(zero)[3].backward()
    torch.testing.assert_close(zero.grad, torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64))
