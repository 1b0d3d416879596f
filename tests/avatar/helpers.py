"""Small scenes shared by the avatar tests."""

from __future__ import annotations

import torch

from trillium.avatar.core import intrinsics_from_fov, look_at


def random_scene(num: int, seed: int, dtype=torch.float32, spread: float = 0.5) -> dict[str, torch.Tensor]:
    """Random Gaussians around the origin (some thin, some large, mixed opacities)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "means": (torch.randn(num, 3, generator=g) * spread).to(dtype),
        "quats": torch.randn(num, 4, generator=g).to(dtype),
        "scales": (torch.rand(num, 3, generator=g) * 0.08 + 0.004).to(dtype),
        "opacities": (torch.rand(num, generator=g) * 0.98 + 0.01).to(dtype),
        "colors": torch.rand(num, 3, generator=g).to(dtype),
    }


def front_camera(width: int, height: int, distance: float = 3.0, fov: float = 40.0, dtype=torch.float32):
    """Camera on +z looking at the origin: (viewmat [4, 4], K [3, 3])."""
    viewmat = look_at(torch.tensor([0.0, 0.0, distance], dtype=dtype), torch.zeros(3, dtype=dtype))
    return viewmat, intrinsics_from_fov(width, height, fov, dtype=dtype)


def axis_camera(fx: float, width: int, height: int, dtype=torch.float32):
    """Identity world-to-camera (camera at the origin looking down +z) with focal fx and centred K."""
    K = torch.tensor([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype), K
