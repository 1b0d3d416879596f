"""Pose-dependent non-rigid deformation: teacher distilled into a light MLP (TaoAvatar, arXiv 2503.17032).

Confirmed (paper abstract): TaoAvatar trains a StyleUNet teacher that predicts pose-dependent
non-rigid maps in UV space, then bakes the deformation into a lightweight MLP student (pose ->
non-rigid mesh deformation) for mobile rendering; blendshapes compensate for detail the student misses.

Our design (details are not public):

- ``UVTeacher``: pose -> MLP -> 4x4 feature map -> upsample + conv blocks -> a [3, S, S] offset map in
  UV space, sampled bilinearly at each vertex's UV (``sphere_uv`` for our procedural head). Much
  heavier than the student, like the StyleUNet it stands in for.
- ``MLPStudent``: pose -> 2 hidden layers -> per-vertex offsets [V, 3], plus *blendshape compensation*:
  a learnable linear pose corrective ``sum_p pose_p C_p`` ([P, V, 3], zero-initialised), i.e. linear
  pose blendshapes as in SqueezeMe (arXiv 2412.15171) on top of the MLP.
- ``distill``: L2 between student and (frozen) teacher offsets on a set of poses; Adam, mini-batches.
- ``synthetic_nonrigid_offsets``: ground truth for tests and demos on the procedural head: smooth
  bulges along the surface normal whose heights are non-linear in the pose (cheeks puff with the
  square of jaw opening, a neck crease with the sine of pitch, a chin shift with yaw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TeacherConfig:
    """UV-space conv teacher: ``pose_dim`` -> [3, uv_size, uv_size] offset map."""

    pose_dim: int
    channels: int = 32
    uv_size: int = 32
    offset_scale: float = 0.01

    def __post_init__(self) -> None:
        if self.pose_dim <= 0 or self.channels <= 0:
            raise ValueError("pose_dim and channels must be positive")
        if self.uv_size < 4 or self.uv_size & (self.uv_size - 1):
            raise ValueError(f"uv_size must be a power of two >= 4, got {self.uv_size}")


@dataclass(frozen=True)
class StudentConfig:
    """MLP student: ``pose_dim`` -> [num_vertices, 3]."""

    pose_dim: int
    num_vertices: int
    hidden: int = 64
    offset_scale: float = 0.01
    compensation: bool = True

    def __post_init__(self) -> None:
        if min(self.pose_dim, self.num_vertices, self.hidden) <= 0:
            raise ValueError("pose_dim, num_vertices and hidden must be positive")


def sphere_uv(vertices: Tensor) -> Tensor:
    """[V, 2] UVs in [-1, 1] (grid_sample convention) from longitude / latitude about the centroid."""
    centred = vertices - vertices.mean(0)
    direction = centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    u = torch.atan2(direction[:, 0], direction[:, 2]) / math.pi
    v = -torch.asin(direction[:, 1].clamp(-1, 1)) / (math.pi / 2)
    return torch.stack([u, v], dim=-1)


class UVTeacher(nn.Module):
    """Pose [B, P] -> per-vertex offsets [B, V, 3] via a UV offset map (StyleUNet stand-in)."""

    def __init__(self, config: TeacherConfig, vertex_uv: Tensor) -> None:
        super().__init__()
        if vertex_uv.ndim != 2 or vertex_uv.shape[-1] != 2:
            raise ValueError(f"vertex_uv must be [V, 2], got {list(vertex_uv.shape)}")
        self.config = config
        c = config.channels
        self.register_buffer("vertex_uv", vertex_uv.clone())
        self.encode = nn.Sequential(nn.Linear(config.pose_dim, 128), nn.SiLU(), nn.Linear(128, c * 16))
        blocks: list[nn.Module] = []
        for _ in range(int(math.log2(config.uv_size)) - 2):
            blocks += [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
        self.decode = nn.Sequential(*blocks, nn.Conv2d(c, 3, 3, padding=1))

    def offset_map(self, pose: Tensor) -> Tensor:
        """[B, 3, S, S] UV-space offsets for pose [B, P]."""
        features = self.encode(pose).view(pose.shape[0], self.config.channels, 4, 4)
        return self.config.offset_scale * self.decode(features)

    def forward(self, pose: Tensor) -> Tensor:
        _check_pose(pose, self.config.pose_dim)
        maps = self.offset_map(pose)
        grid = self.vertex_uv.to(maps.dtype)[None, None].expand(pose.shape[0], 1, -1, 2)
        sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return sampled[:, :, 0].transpose(1, 2)


class MLPStudent(nn.Module):
    """Pose [B, P] -> per-vertex offsets [B, V, 3]: MLP + optional linear pose blendshape compensation."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.mlp = nn.Sequential(
            nn.Linear(config.pose_dim, h),
            nn.SiLU(),
            nn.Linear(h, h),
            nn.SiLU(),
            nn.Linear(h, 3 * config.num_vertices),
        )
        self.compensation = (
            nn.Parameter(torch.zeros(config.pose_dim, config.num_vertices, 3))
            if config.compensation
            else None
        )

    def forward(self, pose: Tensor) -> Tensor:
        _check_pose(pose, self.config.pose_dim)
        offsets = self.config.offset_scale * self.mlp(pose).view(pose.shape[0], self.config.num_vertices, 3)
        if self.compensation is not None:
            offsets = offsets + torch.einsum("bp,pvc->bvc", pose, self.compensation)
        return offsets


def synthetic_nonrigid_offsets(vertices: Tensor, pose: Tensor, amplitude: float = 0.006) -> Tensor:
    """Ground-truth pose-dependent offsets [B, V, 3] for pose [B, 3] = (jaw pitch, head pitch, head yaw).

    Bulges along the outward normal (radial direction) of the procedural head; see the module docstring.
    """
    _check_pose(pose, 3)
    centred = vertices - vertices.mean(0)
    normal = centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    scale = centred.norm(dim=-1).mean()

    def bump(centre: tuple[float, float, float], width: float) -> Tensor:
        target = torch.tensor(centre, dtype=vertices.dtype) * scale
        return torch.exp(-((centred - target) ** 2).sum(-1) / (2 * (width * scale) ** 2))

    cheeks = bump((0.6, -0.3, 0.7), 0.35) + bump((-0.6, -0.3, 0.7), 0.35)
    neck = bump((0.0, -0.9, 0.3), 0.4)
    chin = bump((0.0, -0.7, 0.7), 0.3)
    jaw, pitch, yaw = pose.unbind(-1)
    height = (
        torch.relu(jaw)[:, None] ** 2 * 8.0 * cheeks
        + torch.sin(3.0 * pitch)[:, None] * neck
        + torch.tanh(2.0 * yaw)[:, None] * chin
    )
    side = torch.tensor([1.0, 0.0, 0.0], dtype=vertices.dtype)
    sideways = torch.tanh(2.0 * yaw)[:, None, None] * chin[..., None] * side
    return amplitude * (height[..., None] * normal + sideways)


def train_teacher(
    teacher: UVTeacher,
    poses: Tensor,
    offsets: Tensor,
    *,
    steps: int = 500,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fit the teacher to ground-truth offsets [B, V, 3] for poses [B, P] (L2). Returns the loss per step."""
    if poses.shape[0] != offsets.shape[0]:
        raise ValueError(f"poses ({poses.shape[0]}) and offsets ({offsets.shape[0]}) differ in length")
    return _regress(teacher, poses, offsets, steps, lr, batch_size, seed, progress, "teacher")


def distill(
    teacher: nn.Module,
    student: MLPStudent,
    poses: Tensor,
    *,
    steps: int = 500,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Bake the (frozen) teacher into the student: L2 on per-vertex offsets over poses [B, P].

    Returns the distillation loss per step.
    """
    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([teacher(chunk) for chunk in poses.split(256)])
    return _regress(student, poses, targets, steps, lr, batch_size, seed, progress, "distill")


def offset_error(model: nn.Module, reference: nn.Module | Tensor, poses: Tensor) -> float:
    """Mean per-vertex L2 distance between ``model(poses)`` and a reference model or offsets [B, V, 3]."""
    with torch.no_grad():
        target = reference(poses) if isinstance(reference, nn.Module) else reference
        return float((model(poses) - target).norm(dim=-1).mean())


def _regress(  # noqa: PLR0917 - internal helper
    model: nn.Module,
    poses: Tensor,
    targets: Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool,
    desc: str,
) -> list[float]:
    """Adam + cosine decay on mean squared per-vertex L2 between model(poses) [B, V, 3] and targets."""
    if steps < 0 or batch_size <= 0:
        raise ValueError(f"steps must be >= 0 and batch_size > 0, got {steps}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1), eta_min=lr * 0.05)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        index = torch.randint(poses.shape[0], (min(batch_size, poses.shape[0]),), generator=generator)
        loss = ((model(poses[index]) - targets[index]) ** 2).sum(-1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _check_pose(pose: Tensor, pose_dim: int) -> None:
    if pose.ndim != 2 or pose.shape[-1] != pose_dim:
        raise ValueError(f"pose must be [B, {pose_dim}], got {list(pose.shape)}")
