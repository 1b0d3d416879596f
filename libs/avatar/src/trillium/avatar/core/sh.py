"""Real spherical-harmonics colours, degrees 0-3, in the 3DGS convention (arXiv 2308.04079).

The basis order and constants are the ones 3DGS and gsplat use, so coefficients trained with either
render identically here: ``colour = max(sum_k c_k Y_k(dir) + 0.5, 0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients for a degree (1, 4, 9, 16)."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"sh_degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the basis.

    Args:
        degree: 0..3.
        dirs: [N, 3] view directions (normalised here).

    Returns:
        [N, (degree + 1)^2] basis values.
    """
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colours from SH coefficients, gsplat's activation included.

    Args:
        degree: degree used (coefficients beyond it are ignored).
        dirs: [N, 3] directions from the camera centre to each Gaussian.
        coeffs: [N, K, 3] with K >= (degree + 1)^2.

    Returns:
        [N, 3] colours, ``max(SH(dir) + 0.5, 0)``.
    """
    n_bases = num_sh_bases(degree)
    if coeffs.shape[-2] < n_bases:
        raise ValueError(f"colors has {coeffs.shape[-2]} SH coefficients, sh_degree {degree} needs {n_bases}")
    basis = sh_basis(degree, dirs)
    return torch.clamp((basis[..., None] * coeffs[..., :n_bases, :]).sum(dim=-2) + 0.5, min=0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient that renders as ``rgb`` (inverse of degree-0 ``sh_to_color`` for rgb >= 0)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Colour of a DC-only coefficient, ``max(C0 * sh0 + 0.5, 0)``."""
    return torch.clamp(sh0 * SH_C0 + 0.5, min=0.0)
