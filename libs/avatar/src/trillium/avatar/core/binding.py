"""Gaussians rigged to mesh triangles, following GaussianAvatars (Qian et al., CVPR 2024, arXiv 2312.02069).

Each Gaussian has a parent triangle and lives in that triangle's local frame. Every frame, from the
deformed mesh, each triangle gets an origin (centroid), a rotation (columns: first-edge direction,
face normal, their cross product) and a scale ``k`` (mean of the first edge length and the height on
that edge). World attributes are ``mu' = k R mu + T``, ``s' = k s``, ``q' = quat(R) (x) q``.
Initialisation puts one Gaussian per triangle (mu = 0, log-scale 0 so world scale = k, identity
rotation, opacity 0.1, random colours); densification (clone/split) keeps the parent index and
pruning never leaves a triangle without a Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from trillium.avatar.core.projection import quat_to_rotmat
from trillium.avatar.core.rotations import quat_multiply, rotmat_to_quat
from trillium.avatar.core.sh import rgb_to_sh0, sh0_to_rgb


@dataclass(frozen=True)
class TriangleFrames:
    """Per-triangle local frames.

    Attributes:
        origins: [F, 3] centroids T_f.
        rotations: [F, 3, 3] R_f with columns (edge, normal, edge x normal), det +1.
        scales: [F] k_f.
    """

    origins: Tensor
    rotations: Tensor
    scales: Tensor


@dataclass(frozen=True)
class BoundGaussians:
    """Gaussians in their parent triangles' local frames (the trainable state).

    Attributes:
        parents: [N] long, parent triangle index.
        local_means: [N, 3] mu (k-normalised units).
        local_log_scales: [N, 3] log s.
        local_quats: [N, 4] wxyz, unnormalised.
        opacity_logits: [N] pre-sigmoid opacity.
        sh0: [N, 3] degree-0 SH colour coefficient (colour = max(C0 sh0 + 0.5, 0)).
    """

    parents: Tensor
    local_means: Tensor
    local_log_scales: Tensor
    local_quats: Tensor
    opacity_logits: Tensor
    sh0: Tensor

    def __len__(self) -> int:
        return int(self.parents.shape[0])


@dataclass(frozen=True)
class WorldGaussians:
    """Renderer-ready Gaussians.

    means [N, 3], quats [N, 4] wxyz, scales [N, 3], opacities [N], colors [N, 3].
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor


def triangle_frames(vertices: Tensor, faces: Tensor) -> TriangleFrames:
    """Local frame of every triangle of a (deformed) mesh.

    Args:
        vertices: [V, 3]; faces: [F, 3] long, vertex indices (v0, v1, v2).

    Returns:
        TriangleFrames with origins [F, 3], rotations [F, 3, 3], scales [F].
    """
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    edge = v1 - v0
    edge_len = edge.norm(dim=-1)
    e = edge / edge_len[:, None].clamp(min=1e-12)
    n = torch.linalg.cross(e, v2 - v0)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    b = torch.linalg.cross(e, n)
    b = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    rotations = torch.stack([e, n, b], dim=-1)
    height = ((v2 - v0) * b).sum(-1).abs()
    return TriangleFrames((v0 + v1 + v2) / 3, rotations, 0.5 * (edge_len + height))


def bind_to_world(gaussians: BoundGaussians, frames: TriangleFrames) -> WorldGaussians:
    """World-space Gaussians for the current frame (GaussianAvatars Eq. for mu', s', r')."""
    rot = frames.rotations[gaussians.parents]
    k = frames.scales[gaussians.parents]
    means = (
        k[:, None] * (rot @ gaussians.local_means[..., None]).squeeze(-1) + frames.origins[gaussians.parents]
    )
    quats = quat_multiply(rotmat_to_quat(rot), _normalise(gaussians.local_quats))
    return WorldGaussians(
        means=means,
        quats=quats,
        scales=k[:, None] * torch.exp(gaussians.local_log_scales),
        opacities=torch.sigmoid(gaussians.opacity_logits),
        colors=sh0_to_rgb(gaussians.sh0),
    )


def init_one_per_triangle(
    num_triangles: int, opacity: float = 0.1, generator: torch.Generator | None = None, dtype=torch.float32
) -> BoundGaussians:
    """GaussianAvatars initialisation: one Gaussian at each triangle centroid, world scale k."""
    if num_triangles <= 0:
        raise ValueError(f"num_triangles must be positive, got {num_triangles}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must be in (0, 1), got {opacity}")
    n = num_triangles
    quats = torch.zeros(n, 4, dtype=dtype)
    quats[:, 0] = 1.0
    logit = torch.logit(torch.tensor(opacity, dtype=dtype))
    return BoundGaussians(
        parents=torch.arange(n),
        local_means=torch.zeros(n, 3, dtype=dtype),
        local_log_scales=torch.zeros(n, 3, dtype=dtype),
        local_quats=quats,
        opacity_logits=logit.expand(n).clone(),
        sh0=rgb_to_sh0(torch.rand(n, 3, generator=generator, dtype=dtype)),
    )


def clone(gaussians: BoundGaussians, mask: Tensor) -> BoundGaussians:
    """Append copies of the selected Gaussians (same parent, same local attributes)."""
    return _concat(gaussians, _select(gaussians, mask))


def split(
    gaussians: BoundGaussians, mask: Tensor, num_children: int = 2, generator: torch.Generator | None = None
) -> BoundGaussians:
    """Replace each selected Gaussian by ``num_children`` samples from it, scale / (0.8 N), same parent.

    Children means are drawn from the parent Gaussian in the local frame (3DGS densification,
    arXiv 2308.04079, as used by GaussianAvatars).
    """
    if num_children < 1:
        raise ValueError(f"num_children must be >= 1, got {num_children}")
    chosen = _select(gaussians, mask)
    rep = _repeat(chosen, num_children)
    scales = torch.exp(rep.local_log_scales)
    noise = torch.randn(rep.local_means.shape, generator=generator, dtype=scales.dtype)
    offsets = (quat_to_rotmat(rep.local_quats) @ (noise * scales)[..., None]).squeeze(-1)
    children = replace(
        rep,
        local_means=rep.local_means + offsets,
        local_log_scales=torch.log(scales / (0.8 * num_children)),
    )
    return _concat(_select(gaussians, ~mask), children)


def prune(gaussians: BoundGaussians, mask: Tensor, num_triangles: int) -> BoundGaussians:
    """Remove selected Gaussians, but keep the most opaque one of any triangle that would be left empty."""
    keep = ~mask
    covered = torch.zeros(num_triangles, dtype=torch.bool)
    covered[gaussians.parents[keep]] = True
    order = torch.argsort(gaussians.opacity_logits, descending=True, stable=True)
    order = order[torch.argsort(gaussians.parents[order], stable=True)]
    sorted_parents = gaussians.parents[order]
    first_in_group = torch.ones_like(sorted_parents, dtype=torch.bool)
    first_in_group[1:] = sorted_parents[1:] != sorted_parents[:-1]
    most_opaque = order[first_in_group]
    rescue = most_opaque[~covered[gaussians.parents[most_opaque]]]
    keep[rescue] = True
    return _select(gaussians, keep)


def _normalise(quats: Tensor) -> Tensor:
    return quats / quats.norm(dim=-1, keepdim=True)


def _select(g: BoundGaussians, mask: Tensor) -> BoundGaussians:
    return BoundGaussians(**{f.name: getattr(g, f.name)[mask] for f in fields(g)})


def _repeat(g: BoundGaussians, times: int) -> BoundGaussians:
    return BoundGaussians(**{f.name: getattr(g, f.name).repeat_interleave(times, 0) for f in fields(g)})


def _concat(a: BoundGaussians, b: BoundGaussians) -> BoundGaussians:
    return BoundGaussians(**{f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a)})
