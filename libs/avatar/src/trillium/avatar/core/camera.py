"""Pinhole camera helpers (OpenCV convention: +x right, +y down, +z forward)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target``.

    Args:
        eye, target: [3] world points; up: [3] world up (default +y).

    Returns:
        [4, 4] viewmat with rows (right, down, forward) so camera z points at the target.
    """
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if float(right.norm()) < 1e-8:
        raise ValueError("up must not be parallel to the viewing direction")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    viewmat = torch.eye(4, dtype=eye.dtype, device=eye.device)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = -rot @ eye
    return viewmat


def intrinsics_from_fov(width: int, height: int, fov_y_degrees: float, dtype=torch.float32) -> Tensor:
    """[3, 3] pinhole K with square pixels and the principal point at the image centre."""
    if not 0.0 < fov_y_degrees < 180.0:
        raise ValueError(f"fov_y_degrees must be in (0, 180), got {fov_y_degrees}")
    focal = 0.5 * height / math.tan(math.radians(fov_y_degrees) / 2)
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
