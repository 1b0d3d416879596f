"""Gaussian projection with gsplat 1.5.3 semantics (EWA splatting, Zwicker et al. 2002; arXiv 2308.04079).

Our own implementation of what gsplat's ``fully_fused_projection`` computes for a pinhole camera:
camera-space means and covariances, the perspective Jacobian with x/z and y/z clamped to 1.3x the
field of view, the 0.3 px low-pass (``eps2d``) added to the 2D covariance, its inverse (the conic),
and the opacity-aware per-axis radius ``ceil(min(3.33, sqrt(2 log(255 o))) * sqrt(diag(Sigma2D)))``
that culls Gaussians which cannot reach alpha >= 1/255 anywhere in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33


@dataclass(frozen=True)
class ProjectedGaussians:
    """Screen-space Gaussians for one camera.

    Attributes:
        means2d: [N, 2] pixel coordinates (x right, y down) of the projected centres.
        conics: [N, 3] (a, b, c), the inverse of the blurred 2D covariance [[a, b], [b, c]].
        depths: [N] camera-space z.
        radii: [N, 2] int32 per-axis pixel radius; zero means culled.
        opacities: [N] opacity used for compositing (times the antialiasing compensation if enabled).
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    opacities: Tensor

    @property
    def visible(self) -> Tensor:
        """[N] bool: the Gaussian survived culling."""
        return (self.radii > 0).any(dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from quaternions.

    Args:
        quats: [..., 4] in wxyz order; normalised here.

    Returns:
        [..., 3, 3] rotation matrices.
    """
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_from_quat_scale(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance ``R diag(s)^2 R^T``.

    Args:
        quats: [N, 4] wxyz.
        scales: [N, 3] standard deviations (post-exp).

    Returns:
        [N, 3, 3] covariances.
    """
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(  # noqa: PLR0917 - gsplat-style positional signature
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> ProjectedGaussians:
    """Project 3D Gaussians to the image plane of a pinhole camera.

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] wxyz rotations (need not be normalised).
        scales: [N, 3] standard deviations.
        opacities: [N] in [0, 1].
        viewmat: [4, 4] world-to-camera (OpenCV convention: +z forward, +y down).
        K: [3, 3] intrinsics.
        width, height: image size in pixels.
        near_plane, far_plane: depth range kept (culled outside).
        eps2d: low-pass added to the diagonal of the 2D covariance (pixels^2).
        radius_clip: Gaussians whose both radii are <= this are culled.
        antialiased: gsplat's "antialiased" mode, opacity times sqrt(det Sigma / det(Sigma + eps2d I)).

    Returns:
        ProjectedGaussians; culled entries have zero radii and finite (unused) values.
    """
    # Elementwise products instead of batched 3x3 matmuls (much faster on CPU for [N, 3, 3]):
    # Sigma2D = (J Rc Rq S)(J Rc Rq S)^T, so only the [N, 2, 3] factor is formed.
    rot = viewmat[:3, :3]
    means_c = (means[:, None, :] * rot).sum(-1) + viewmat[:3, 3]
    factor = (rot[None, :, :, None] * quat_to_rotmat(quats)[:, None, :, :]).sum(2) * scales[:, None, :]
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    rz = 1.0 / z_safe
    tx = z_safe * torch.clamp(x * rz, min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx)
    ty = z_safe * torch.clamp(
        y * rz, min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy
    )
    row_x = (fx * rz)[:, None] * factor[:, 0] - (fx * tx * rz * rz)[:, None] * factor[:, 2]
    row_y = (fy * rz)[:, None] * factor[:, 1] - (fy * ty * rz * rz)[:, None] * factor[:, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    c00, c01, c11 = (row_x * row_x).sum(-1), (row_x * row_y).sum(-1), (row_y * row_y).sum(-1)
    det_orig = c00 * c11 - c01 * c01
    b00, b11 = c00 + eps2d, c11 + eps2d
    det = b00 * b11 - c01 * c01
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([b11 / det_safe, -c01 / det_safe, b00 / det_safe], dim=-1)
    if antialiased:
        opacities = opacities * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    radii, keep = _radii(
        means2d.detach(), b00.detach(), b11.detach(), opacities=opacities.detach(), width=width, height=height
    )
    keep = keep & in_depth & (det > 0) & ((radii[:, 0] > radius_clip) | (radii[:, 1] > radius_clip))
    radii = torch.where(keep[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return ProjectedGaussians(means2d, conics, z, radii, opacities)


def _radii(
    means2d: Tensor, var_x: Tensor, var_y: Tensor, *, opacities: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Opacity-aware per-axis radius (arXiv 2402.00525 App. B.2) and the in-image test."""
    bright_enough = opacities >= ALPHA_THRESHOLD
    log_ratio = torch.log(torch.clamp(opacities / ALPHA_THRESHOLD, min=1.0))
    extend = torch.clamp(torch.sqrt(2.0 * log_ratio), max=MAX_EXTEND)
    radii = torch.ceil(extend[:, None] * torch.sqrt(torch.stack([var_x, var_y], dim=-1).clamp(min=0.0)))
    mx, my = means2d[:, 0], means2d[:, 1]
    rx, ry = radii[:, 0], radii[:, 1]
    inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    return radii, bright_enough & inside
