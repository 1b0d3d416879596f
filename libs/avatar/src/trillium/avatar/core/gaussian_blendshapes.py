"""Speaker-specific Gaussian blendshapes driven by a latent pose (GaussianTalker, arXiv 2404.14037).

Confirmed by the papers: GaussianTalker (arXiv 2404.14037) adds *speaker-specific blendshapes driven
by a latent pose* on top of FLAME-bound Gaussians; 3D Gaussian Blendshapes (Ma et al., SIGGRAPH 2024)
use the linear form ``B = B0 + sum_k psi_k dB_k``; TaoAvatar (arXiv 2503.17032) uses learnable
Gaussian blendshapes driven by a global pose feature.

Our design (the papers do not give these details):

- Per Gaussian, in its parent triangle's local frame (before GaussianAvatars binding, arXiv 2312.02069):
  ``attr_i(z) = attr_i0 + sum_k z_k dA_ik``.
- Geometry latent ``z_geo`` (default 8) drives local mean, log-scale and an axis-angle rotation delta
  (``q_i(z) = q_i0 (x) quat(sum_k z_k dr_ik)``, renormalised by the binding); appearance latent ``z_app``
  (default 28) drives opacity logit and the colour DC (``sh0``). Sizes 8 / 28 match the ``pose_z`` and
  ``app_pose_z`` outputs of TaoAvatar's public on-device body converter.
- ``z = f(expression, jaw)`` is a two-layer MLP; bases start at zero, so an untrained model is the
  identity on the Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from trillium.avatar.core.binding import BoundGaussians
from trillium.avatar.core.rotations import quat_multiply


@dataclass(frozen=True)
class GaussianBlendshapeConfig:
    """Hyperparameters of the speaker-specific Gaussian blendshapes.

    Attributes:
        num_gaussians: N.
        num_expressions: E expression coefficients fed to the latent MLP.
        num_jaw: jaw pose entries (axis-angle, 3).
        geometry_latent: K_g, size of ``z_geo``.
        appearance_latent: K_a, size of ``z_app``.
        hidden: width of the latent MLP.
    """

    num_gaussians: int
    num_expressions: int
    num_jaw: int = 3
    geometry_latent: int = 8
    appearance_latent: int = 28
    hidden: int = 64

    def __post_init__(self) -> None:
        for name in ("num_gaussians", "num_expressions", "geometry_latent", "appearance_latent", "hidden"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_jaw < 0:
            raise ValueError(f"num_jaw must be >= 0, got {self.num_jaw}")


@dataclass(frozen=True)
class GaussianBlendshapeBasis:
    """Linear bases of per-Gaussian local-frame attribute deltas.

    Attributes:
        means: [K_g, N, 3] local-mean offsets.
        log_scales: [K_g, N, 3] log-scale deltas.
        rotations: [K_g, N, 3] axis-angle deltas (composed on the right of the local quaternion).
        opacity_logits: [K_a, N] opacity-logit deltas.
        sh0: [K_a, N, 3] colour DC deltas.
    """

    means: Tensor
    log_scales: Tensor
    rotations: Tensor
    opacity_logits: Tensor
    sh0: Tensor


def blend(base: Tensor, deltas: Tensor, weights: Tensor) -> Tensor:
    """``base + sum_k w_k deltas_k``.

    Args:
        base: [N, *D]; deltas: [K, N, *D]; weights: [..., K].

    Returns:
        [..., N, *D].
    """
    if deltas.shape[1:] != base.shape:
        raise ValueError(f"deltas must be [K, {list(base.shape)}], got {list(deltas.shape)}")
    if weights.shape[-1] != deltas.shape[0]:
        raise ValueError(f"weights has {weights.shape[-1]} entries, basis has {deltas.shape[0]}")
    return base + torch.tensordot(weights, deltas, dims=([-1], [0]))


def axis_angle_to_quat(axis_angle: Tensor) -> Tensor:
    """[..., 4] wxyz ``(cos(t/2), sin(t/2) r/t)`` for rotation vectors [..., 3], t = |r|.

    Uses Taylor series below t^2 = 1e-8 so the gradient at r = 0 is the true one (d q_xyz / d r = I/2);
    a Rodrigues matrix built from ``r / |r|`` has zero gradient there, and zero-initialised rotation
    bases could then never start learning.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w, half_sinc * axis_angle], dim=-1)


def apply_gaussian_blendshapes(
    gaussians: BoundGaussians, basis: GaussianBlendshapeBasis, z_geometry: Tensor, z_appearance: Tensor
) -> BoundGaussians:
    """Local-frame Gaussians for latent poses (before binding).

    Args:
        gaussians: N base Gaussians (local_means [N, 3], ...).
        basis: bases with K_g geometry and K_a appearance components for the same N.
        z_geometry: [..., K_g]; z_appearance: [..., K_a] (same leading shape B...).

    Returns:
        BoundGaussians whose attributes have shape [..., N, *] (parents unchanged, [N]); with a
        single frame (1-D latents) the result can go straight to ``bind_to_world``.
    """
    if z_geometry.shape[:-1] != z_appearance.shape[:-1]:
        raise ValueError(
            f"z_geometry {list(z_geometry.shape)} and z_appearance {list(z_appearance.shape)} "
            "must share leading dimensions"
        )
    delta_rotation = blend(torch.zeros_like(gaussians.local_means), basis.rotations, z_geometry)
    delta_quat = axis_angle_to_quat(delta_rotation)
    return replace(
        gaussians,
        local_means=blend(gaussians.local_means, basis.means, z_geometry),
        local_log_scales=blend(gaussians.local_log_scales, basis.log_scales, z_geometry),
        local_quats=quat_multiply(gaussians.local_quats.expand_as(delta_quat), delta_quat),
        opacity_logits=blend(gaussians.opacity_logits, basis.opacity_logits, z_appearance),
        sh0=blend(gaussians.sh0, basis.sh0, z_appearance),
    )


class LatentPoseMLP(nn.Module):
    """``(expression [B, E], jaw [B, J]) -> (z_geo [B, K_g], z_app [B, K_a])``: a 3-layer SiLU MLP."""

    def __init__(self, config: GaussianBlendshapeConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.net = nn.Sequential(
            nn.Linear(c.num_expressions + c.num_jaw, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.geometry_latent + c.appearance_latent),
        )

    def forward(self, expression: Tensor, jaw: Tensor) -> tuple[Tensor, Tensor]:
        c = self.config
        if expression.shape[-1] != c.num_expressions:
            raise ValueError(f"expression must be [..., {c.num_expressions}], got {list(expression.shape)}")
        if jaw.shape[-1] != c.num_jaw or jaw.shape[:-1] != expression.shape[:-1]:
            expected = [*expression.shape[:-1], c.num_jaw]
            raise ValueError(f"jaw must be {expected}, got {list(jaw.shape)}")
        z = self.net(torch.cat([expression, jaw], dim=-1))
        return z[..., : c.geometry_latent], z[..., c.geometry_latent :]


class SpeakerGaussianBlendshapes(nn.Module):
    """Latent MLP + learnable bases (zero-initialised: identity until trained)."""

    def __init__(self, config: GaussianBlendshapeConfig) -> None:
        super().__init__()
        self.config = config
        n, kg, ka = config.num_gaussians, config.geometry_latent, config.appearance_latent
        self.latent = LatentPoseMLP(config)
        self.delta_means = nn.Parameter(torch.zeros(kg, n, 3))
        self.delta_log_scales = nn.Parameter(torch.zeros(kg, n, 3))
        self.delta_rotations = nn.Parameter(torch.zeros(kg, n, 3))
        self.delta_opacity_logits = nn.Parameter(torch.zeros(ka, n))
        self.delta_sh0 = nn.Parameter(torch.zeros(ka, n, 3))

    def basis(self) -> GaussianBlendshapeBasis:
        return GaussianBlendshapeBasis(
            self.delta_means,
            self.delta_log_scales,
            self.delta_rotations,
            self.delta_opacity_logits,
            self.delta_sh0,
        )

    def forward(self, gaussians: BoundGaussians, expression: Tensor, jaw: Tensor) -> BoundGaussians:
        """Local-frame Gaussians for expression [..., E] and jaw [..., J] (``apply_gaussian_blendshapes``)."""
        if len(gaussians) != self.config.num_gaussians:
            raise ValueError(f"gaussians has {len(gaussians)} entries, model has {self.config.num_gaussians}")
        z_geometry, z_appearance = self.latent(expression, jaw)
        return apply_gaussian_blendshapes(gaussians, self.basis(), z_geometry, z_appearance)
