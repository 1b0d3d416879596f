"""Vectorised tile binning: which depth-sorted Gaussians touch which 16x16 tile.

gsplat (arXiv 2409.06765) builds 64-bit ``(tile, depth)`` keys and radix-sorts them on the GPU.
On the CPU we sort the visible Gaussians by depth once and then *stably* sort the intersections by
tile id, which gives the same per-tile front-to-back order without a per-intersection depth key.
The tile rectangle of a Gaussian is ``[floor((m - r) / ts), ceil((m + r) / ts))`` clamped to the
grid, as in gsplat's intersection kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trillium.avatar.core.projection import ProjectedGaussians


@dataclass(frozen=True)
class TileBins:
    """Intersections grouped by tile.

    Attributes:
        gaussian_ids: [M] indices into the projected Gaussians, grouped by tile, front to back.
        tile_offsets: [tiles_y * tiles_x + 1] start of each tile's run in ``gaussian_ids``.
        tiles_x, tiles_y: grid size.
        tile_size: tile edge in pixels.
    """

    gaussian_ids: Tensor
    tile_offsets: Tensor
    tiles_x: int
    tiles_y: int
    tile_size: int


def tile_rects(means2d: Tensor, radii: Tensor, tile_size: int, tiles_x: int, tiles_y: int) -> Tensor:
    """Per-Gaussian tile rectangles.

    Args:
        means2d: [N, 2] pixel centres; radii: [N, 2] per-axis pixel radii.

    Returns:
        [N, 4] int64 (x0, y0, x1, y1), x1/y1 exclusive.
    """
    r = radii.to(means2d.dtype)
    lo = torch.floor((means2d - r) / tile_size)
    hi = torch.ceil((means2d + r) / tile_size)
    limits = torch.tensor([tiles_x, tiles_y], device=means2d.device, dtype=means2d.dtype)
    lo = torch.minimum(lo.clamp(min=0), limits)
    hi = torch.minimum(hi.clamp(min=0), limits)
    return torch.cat([lo, hi], dim=-1).long()


def bin_gaussians(projected: ProjectedGaussians, width: int, height: int, tile_size: int = 16) -> TileBins:
    """Assign visible Gaussians to tiles, each tile's list sorted front to back by camera depth."""
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    device = projected.means2d.device
    visible = torch.nonzero(projected.visible).squeeze(-1)
    order = visible[torch.sort(projected.depths.detach()[visible], stable=True).indices]
    rects = tile_rects(projected.means2d.detach()[order], projected.radii[order], tile_size, tiles_x, tiles_y)
    span_x = rects[:, 2] - rects[:, 0]
    counts = span_x * (rects[:, 3] - rects[:, 1])
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(order.numel(), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - starts[owner]
    tile_x = rects[owner, 0] + local % span_x[owner]
    tile_y = rects[owner, 1] + local // span_x[owner]
    tile_ids = tile_y * tiles_x + tile_x
    by_tile = torch.sort(tile_ids, stable=True).indices
    per_tile = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return TileBins(order[owner[by_tile]], offsets, tiles_x, tiles_y, tile_size)
