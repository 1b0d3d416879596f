"""One entry point for every renderer: ``render(...) -> RenderOutput``.

Backends (all with gsplat 1.5.3 semantics: EWA projection with the 0.3 px low-pass, pixel centres
at +0.5, alpha clamp 0.999, skip below 1/255, exclusive stop at transmittance 1e-4, depth order):

- ``"gsplat"``: gsplat's CUDA rasteriser (CUDA tensors only).
- ``"native"``: compiled C/OpenMP tiles (CPU, float32) with a hand-written backward pass: the
  serving path and the fast fitting path.
- ``"torch"``: tiled, chunked torch compositor (any device, any float dtype, differentiable by
  autograd): the portable fallback and the float64 path for gradient checks.
- ``"reference"``: dense per-Gaussian loop over all pixels (slow oracle for tests).
- ``"auto"``: gsplat for CUDA tensors; otherwise native for float32 when it builds here, else torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from trillium.avatar.core.gsplat_backend import DEPTH_MODES, gsplat_arguments, render_gsplat
from trillium.avatar.core.projection import project_gaussians
from trillium.avatar.core.rasterize_native import native_available, rasterize_native
from trillium.avatar.core.rasterize_reference import rasterize_reference
from trillium.avatar.core.rasterize_torch import rasterize_tiled_torch
from trillium.avatar.core.sh import sh_to_color

BACKENDS = ("auto", "gsplat", "native", "torch", "reference")
RASTERIZE_MODES = ("classic", "antialiased")


@dataclass(frozen=True)
class RenderOutput:
    """A rendered frame.

    Attributes:
        rgb: [H, W, D] colour composited over the background.
        depth: [H, W, 1] expected depth sum(w z) / alpha ("expected") or sum(w z) ("accumulated").
        alpha: [H, W, 1] 1 - final transmittance.
        meta: backend name and projection results (radii, means2d, depths, conics) when available.
    """

    rgb: Tensor
    depth: Tensor
    alpha: Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def render(  # noqa: PLR0917 - gsplat-style positional signature
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
    backend: str = "auto",
    *,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    rasterize_mode: str = "classic",
    depth_mode: str = "expected",
    tile_size: int = 16,
) -> RenderOutput:
    """Render N Gaussians from one pinhole camera.

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] wxyz rotations (need not be normalised).
        scales: [N, 3] standard deviations (post-exp).
        opacities: [N] in [0, 1] (post-sigmoid).
        colors: [N, D] colours, or [N, K, 3] SH coefficients when ``sh_degree`` is set.
        viewmat: [4, 4] world-to-camera (OpenCV: +z forward, +y down).
        K: [3, 3] intrinsics.
        width, height: image size in pixels.
        background: [D] colour behind the Gaussians, or None (black).
        backend: one of ``BACKENDS`` (see module docstring).
        sh_degree: evaluate SH colours of this degree (0..3) from the camera centre.
        near_plane, far_plane, eps2d, radius_clip, rasterize_mode, tile_size: as in gsplat.
        depth_mode: "expected" (gsplat "ED") or "accumulated" (gsplat "D").

    Returns:
        RenderOutput(rgb [H, W, D], depth [H, W, 1], alpha [H, W, 1], meta).
    """
    _validate(
        means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmat=viewmat, K=K,
        width=width, height=height, background=background, sh_degree=sh_degree,
    )  # fmt: skip
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"depth_mode must be one of {sorted(DEPTH_MODES)}, got {depth_mode!r}")
    chosen = _choose_backend(backend, means, quats, scales, opacities, colors)

    if chosen == "gsplat":
        args = gsplat_arguments(
            means, quats, scales, opacities, colors, viewmat, K, width, height, background,
            sh_degree, near_plane, far_plane, eps2d, radius_clip, rasterize_mode, depth_mode, tile_size,
        )  # fmt: skip
        rgb, depth, alpha, meta = render_gsplat(args)
        return RenderOutput(rgb, depth, alpha, {"backend": "gsplat", **meta})

    if sh_degree is not None:
        camera_centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        colors = sh_to_color(sh_degree, means - camera_centre, colors)
    projected = project_gaussians(
        means, quats, scales, opacities, viewmat, K, width, height,
        near_plane, far_plane, eps2d, radius_clip, antialiased=rasterize_mode == "antialiased",
    )  # fmt: skip
    if chosen == "native":
        rgb, depth, alpha = rasterize_native(
            projected, colors, width, height, background, tile_size=tile_size
        )
    elif chosen == "torch":
        rgb, depth, alpha = rasterize_tiled_torch(
            projected, colors, width, height, background, tile_size=tile_size
        )
    else:
        rgb, depth, alpha = rasterize_reference(projected, colors, width, height, background)
    if depth_mode == "expected":
        depth = depth / alpha.clamp(min=1e-10)
    meta = {
        "backend": chosen,
        "radii": projected.radii,
        "means2d": projected.means2d,
        "depths": projected.depths,
        "conics": projected.conics,
        "num_visible": int(projected.visible.sum()),
    }
    return RenderOutput(rgb, depth, alpha, meta)


def _choose_backend(backend: str, *tensors: Tensor) -> str:
    on_cuda = tensors[0].is_cuda
    if backend == "gsplat" and not on_cuda:
        raise ValueError(
            "backend 'gsplat' needs CUDA tensors (gsplat has no CPU path); use 'native' or 'torch'"
        )
    if backend != "auto":
        return backend
    if on_cuda:
        return "gsplat"
    if tensors[0].dtype != torch.float32 or not native_available():
        return "torch"
    return "native"


def _validate(
    *,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor | None,
    sh_degree: int | None,
) -> None:
    if means.ndim != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    n = means.shape[0]
    expected = {"quats": (quats, (n, 4)), "scales": (scales, (n, 3)), "opacities": (opacities, (n,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} for N={n}, got {tuple(tensor.shape)}")
    if sh_degree is None and (colors.ndim != 2 or colors.shape[0] != n):
        raise ValueError(f"colors must be [N, D] for N={n}, got {tuple(colors.shape)}")
    if sh_degree is not None and (colors.ndim != 3 or colors.shape[0] != n or colors.shape[-1] != 3):
        raise ValueError(
            f"colors must be [N, K, 3] SH coefficients when sh_degree is set, got {tuple(colors.shape)}"
        )
    if tuple(viewmat.shape) != (4, 4):
        raise ValueError(f"viewmat must be [4, 4], got {tuple(viewmat.shape)}")
    if tuple(K.shape) != (3, 3):
        raise ValueError(f"K must be [3, 3], got {tuple(K.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    channels = colors.shape[-1]
    if background is not None and tuple(background.shape) != (channels,):
        raise ValueError(f"background must be [{channels}], got {tuple(background.shape)}")
    for name, tensor in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities)):
        if not bool(torch.isfinite(tensor.detach()).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    if n and (float(opacities.detach().min()) < 0.0 or float(opacities.detach().max()) > 1.0):
        raise ValueError("opacities must be in [0, 1] (post-sigmoid)")
