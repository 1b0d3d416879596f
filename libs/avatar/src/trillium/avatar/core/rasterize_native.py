"""Compiled CPU compositor (C + OpenMP through ctypes), float32, with a backward pass.

Same tile binning and per-pixel rules as ``rasterize_tiled_torch`` (gsplat 1.5.3 semantics), but the
per-tile loop runs in C: tiles are spread over OpenMP threads, the inner loop runs over 8-pixel
SIMD blocks inside each Gaussian's pixel window, and a tile stops once every pixel's transmittance
has stopped. The backward pass walks each tile back to front (3DGS, arXiv 2308.04079; gsplat's
RasterizeToPixels3DGSBwd) and returns gradients for the screen-space means, conics, opacities and
features; ``torch.autograd`` carries them through our torch projection to the 3D parameters.

Why ctypes + gcc instead of ``torch.utils.cpp_extension``: the kernel needs no torch headers, so it
builds in about a second (a torch extension takes a minute or more on two cores) and does not
depend on the torch C++ ABI. Why not ``torch.compile``: the data-dependent per-tile early exit and
ragged tile lists do not compile into a single graph; measured slower than this kernel. The
shared library is cached under ``$TRILLIUM_AVATAR_CACHE`` (default ``~/.cache/trillium-avatar``)
keyed by a hash of source, flags and host; if no C compiler is available, ``native_available()`` is
False and ``render(..., backend="auto")`` falls back to the torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from trillium.avatar.core.projection import ProjectedGaussians

_SOURCE = Path(__file__).with_name("rasterize_native.c")
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_BUILD_LOCK = threading.Lock()


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "trillium-avatar"
    return Path(os.environ.get("TRILLIUM_AVATAR_CACHE", str(default)))


@cache
def _load_library() -> ctypes.CDLL:
    """Compile (once per source/flags/host) and load the kernel."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC); the native renderer needs gcc with OpenMP")
    source = _SOURCE.read_text()
    key = hashlib.sha256("\0".join([source, *_FLAGS, compiler, platform.node(), platform.machine()]).encode())
    target = _cache_dir() / f"rasterize-{key.hexdigest()[:16]}.so"
    with _BUILD_LOCK:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            cmd = [compiler, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                os.unlink(tmp)
                raise RuntimeError(f"building the native renderer failed:\n{result.stderr}")
            os.replace(tmp, target)
    lib = ctypes.CDLL(str(target))
    i32, ptr = ctypes.c_int32, ctypes.c_void_p
    # Shared leading arguments: m, 6 per-Gaussian arrays, channels, width, height, tile size, 3 image arrays.
    common = [i32, *[ptr] * 6, *[i32] * 4, *[ptr] * 3]
    lib.trl_rasterize_forward.argtypes = [*common, i32]
    lib.trl_rasterize_forward.restype = ctypes.c_int64
    lib.trl_rasterize_backward.argtypes = [*common, ptr, i32, ptr, ptr, ptr, ptr, i32]
    lib.trl_rasterize_backward.restype = ctypes.c_int64
    return lib


def native_available() -> bool:
    """True when the compiled kernel builds and loads on this machine."""
    try:
        _load_library()
    except (RuntimeError, OSError):
        return False
    return True


class _NativeComposite(torch.autograd.Function):
    """Autograd wrapper: (means2d, conics, opacities, feats) -> (features [H, W, F], transmittance [H, W])."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, radii, order, width, height, tile_size, threads):  # noqa: PLR0917
        lib = _load_library()
        out = torch.zeros(height, width, feats.shape[-1], dtype=torch.float32)
        transmittance = torch.ones(height, width, dtype=torch.float32)
        last = torch.zeros(height, width, dtype=torch.int32)
        status = lib.trl_rasterize_forward(
            order.numel(), order.data_ptr(), means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(),
            radii.data_ptr(), feats.data_ptr(), feats.shape[-1], width, height, tile_size,
            out.data_ptr(), transmittance.data_ptr(), last.data_ptr(), threads,
        )  # fmt: skip
        if status < 0:
            raise RuntimeError("native renderer: out of memory")
        ctx.save_for_backward(means2d, conics, opacities, feats, radii, order, transmittance, last)
        ctx.config = (width, height, tile_size, threads)
        return out, transmittance

    @staticmethod
    def backward(ctx, grad_out, grad_transmittance):
        means2d, conics, opacities, feats, radii, order, transmittance, last = ctx.saved_tensors
        width, height, tile_size, threads = ctx.config
        grads = [torch.zeros_like(t) for t in (means2d, conics, opacities, feats)]
        grad_out = torch.zeros_like(transmittance)[..., None] if grad_out is None else grad_out
        grad_out = grad_out.to(torch.float32).expand(height, width, feats.shape[-1]).contiguous()
        grad_t = torch.zeros_like(transmittance) if grad_transmittance is None else grad_transmittance
        grad_t = grad_t.to(torch.float32).contiguous()
        status = _load_library().trl_rasterize_backward(
            order.numel(), order.data_ptr(), means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(),
            radii.data_ptr(), feats.data_ptr(), feats.shape[-1], width, height, tile_size,
            transmittance.data_ptr(), last.data_ptr(), grad_out.data_ptr(), grad_t.data_ptr(),
            means2d.shape[0], *(g.data_ptr() for g in grads), threads,
        )  # fmt: skip
        if status < 0:
            raise RuntimeError("native renderer: out of memory")
        return (*grads, None, None, None, None, None, None)


def rasterize_native(
    projected: ProjectedGaussians,
    colors: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    *,
    tile_size: int = 16,
    num_threads: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians with the compiled kernel (differentiable, float32).

    Args:
        projected: output of ``project_gaussians`` (N Gaussians), CPU tensors.
        colors: [N, D] colours or features.
        width, height: image size.
        background: [D] or None (black).
        tile_size: tile edge in pixels, a multiple of 8 (the SIMD width) up to 64.
        num_threads: OpenMP threads; default ``torch.get_num_threads()``.

    Returns:
        (color [H, W, D], accumulated depth [H, W, 1], alpha [H, W, 1]) as float32.
    """
    if tile_size not in (8, 16, 24, 32, 40, 48, 56, 64):
        raise ValueError(
            f"tile_size must be a multiple of 8 in [8, 64] for the native renderer, got {tile_size}"
        )
    f32 = torch.float32
    with torch.no_grad():
        visible = torch.nonzero(projected.visible).squeeze(-1)
        order = visible[torch.sort(projected.depths[visible], stable=True).indices].contiguous()
    feats = torch.cat([colors.to(f32), projected.depths.to(f32)[:, None]], -1).contiguous()
    threads = max(1, num_threads if num_threads is not None else torch.get_num_threads())
    out, transmittance = _NativeComposite.apply(
        projected.means2d.to(f32).contiguous(),
        projected.conics.to(f32).contiguous(),
        projected.opacities.to(f32).contiguous(),
        feats,
        projected.radii.to(torch.int32).contiguous(),
        order,
        width,
        height,
        tile_size,
        threads,
    )
    color, depth = out[..., :-1], out[..., -1:]
    if background is not None:
        color = color + transmittance[..., None] * background.to(f32)
    return color, depth, 1 - transmittance[..., None]
