"""Rotation helpers shared by binding and deformation (quaternions are wxyz, as in gsplat)."""

from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_rotmat(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula, ``R = I + a(θ) K + b(θ) K²`` with ``K = [r]ₓ`` (unnormalised).

    ``a = sin θ / θ`` and ``b = (1 - cos θ) / θ²`` switch to their Taylor series near θ = 0, so the
    rotation is exact at zero *and* differentiable there (d R / d r = [d r]ₓ), which lets a pose that
    starts at identity learn.

    Args:
        axis_angle: [..., 3] rotation vectors (angle = norm, radians).

    Returns:
        [..., 3, 3] rotation matrices; exact identity for a zero vector.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    kx, ky, kz = axis_angle.unbind(-1)
    zeros = torch.zeros_like(kx)
    skew = torch.stack([zeros, -kz, ky, kz, zeros, -kx, -ky, kx, zeros], -1).reshape(*kx.shape, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + a[..., None] * skew + b[..., None] * (skew @ skew)


def rotmat_to_quat(rotmats: Tensor) -> Tensor:
    """Unit quaternions (wxyz, w >= 0) from rotation matrices [..., 3, 3] (Shepperd's method)."""
    m = rotmats
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack(
                [
                    1 + m00 + m11 + m22,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m00 - m11 - m22,
                    m[..., 1, 0] + m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] + m[..., 0, 1],
                    1 - m00 + m11 - m22,
                    m[..., 2, 1] + m[..., 1, 2],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 2, 1] + m[..., 1, 2],
                    1 - m00 - m11 + m22,
                ],
                -1,
            ),
        ],
        dim=-2,
    )
    pivots = torch.stack([m00 + m11 + m22, m00, m11, m22], -1).argmax(-1)
    chosen = torch.gather(candidates, -2, pivots[..., None, None].expand(*pivots.shape, 1, 4)).squeeze(-2)
    quat = chosen / chosen.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quat_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product p (x) q of wxyz quaternions [..., 4] (rotation q first, then p)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        -1,
    )
