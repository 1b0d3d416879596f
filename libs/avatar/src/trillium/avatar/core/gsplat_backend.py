"""The CUDA backend: gsplat 1.5.3's ``rasterization`` (arXiv 2409.06765), called with our conventions.

``gsplat_arguments`` is a pure function (unit-tested without a GPU) that maps one camera and one
scene onto gsplat's batched signature: ``viewmats [1, 4, 4]``, ``Ks [1, 3, 3]``,
``backgrounds [1, D]``, ``packed=False`` (dense intermediates are faster for avatar-sized scenes)
and ``render_mode`` "RGB+ED" / "RGB+D" so depth is the last channel. ``render_gsplat`` makes the call;
gsplat has no CPU path (it JIT-builds CUDA code), so it is only used for CUDA tensors.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

DEPTH_MODES = {"expected": "RGB+ED", "accumulated": "RGB+D"}


def gsplat_arguments(  # noqa: PLR0917 - mirrors render()
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    rasterize_mode: str = "classic",
    depth_mode: str = "expected",
    tile_size: int = 16,
) -> dict[str, Any]:
    """Keyword arguments for ``gsplat.rasterization`` (shapes as in ``trillium.avatar.core.render``)."""
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"depth_mode must be one of {sorted(DEPTH_MODES)}, got {depth_mode!r}")
    return {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "viewmats": viewmat[None],
        "Ks": K[None],
        "width": width,
        "height": height,
        "near_plane": near_plane,
        "far_plane": far_plane,
        "radius_clip": radius_clip,
        "eps2d": eps2d,
        "sh_degree": sh_degree,
        "packed": False,
        "tile_size": tile_size,
        "backgrounds": None if background is None else background[None],
        "render_mode": DEPTH_MODES[depth_mode],
        "rasterize_mode": rasterize_mode,
        "camera_model": "pinhole",
    }


def render_gsplat(arguments: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Call gsplat. Returns (rgb [H, W, D], depth [H, W, 1], alpha [H, W, 1], gsplat's meta)."""
    from gsplat import rasterization

    colors, alphas, meta = rasterization(**arguments)
    return colors[0, ..., :-1], colors[0, ..., -1:], alphas[0], meta
