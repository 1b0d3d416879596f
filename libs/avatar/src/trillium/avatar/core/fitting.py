"""Fit mesh-bound Gaussians to multi-view images (GaussianAvatars, arXiv 2312.02069; 3DGS, arXiv 2308.04079).

Confirmed (papers / GaussianAvatars defaults): loss ``(1 - lambda) L1 + lambda D-SSIM`` with
lambda = 0.2 (3DGS), D-SSIM = 1 - SSIM as in the 3DGS code; binding regularisers
``L_pos = 1e-2 mean ReLU(||mu_i|| - 1)`` and ``L_scale = mean ||ReLU(s_i - 0.6)||`` in local
(k-normalised) units; Adam; densification by clone/split that keeps the parent triangle.

Our design (small CPU fits, not the papers' 600k-iteration schedule): a single static mesh (one
expression) seen from several cameras; per-attribute learning rates in local units with cosine decay
for the means; densify every ``densify_every`` steps by the 3DGS rule on the accumulated norm of the
screen-space mean gradient (clone small, split large Gaussians, threshold on the local scale),
optimiser state reset after each densification; the native renderer's hand-written backward is the
default fast path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from trillium.avatar.core.binding import (
    BoundGaussians,
    TriangleFrames,
    bind_to_world,
    clone,
    init_one_per_triangle,
    split,
    triangle_frames,
)
from trillium.avatar.core.blendshapes import BlendshapeRig
from trillium.avatar.core.camera import intrinsics_from_fov, look_at
from trillium.avatar.core.metrics import psnr, ssim
from trillium.avatar.core.procedural import HEAD_RADII, procedural_head, random_bound_gaussians
from trillium.avatar.core.render import render
from trillium.avatar.core.sh import rgb_to_sh0

TRAINABLE = ("local_means", "local_log_scales", "local_quats", "opacity_logits", "sh0")


@dataclass(frozen=True)
class MultiViewImages:
    """Posed images of one static subject.

    Attributes:
        images: [V, H, W, 3] in [0, 1].
        viewmats: [V, 4, 4] world-to-camera (OpenCV).
        Ks: [V, 3, 3] intrinsics.
        background: [3] colour behind the subject.
    """

    images: Tensor
    viewmats: Tensor
    Ks: Tensor
    background: Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be [V, H, W, 3], got {list(self.images.shape)}")
        v = self.images.shape[0]
        if tuple(self.viewmats.shape) != (v, 4, 4):
            raise ValueError(f"viewmats must be [{v}, 4, 4], got {list(self.viewmats.shape)}")
        if tuple(self.Ks.shape) != (v, 3, 3):
            raise ValueError(f"Ks must be [{v}, 3, 3], got {list(self.Ks.shape)}")
        if tuple(self.background.shape) != (3,):
            raise ValueError(f"background must be [3], got {list(self.background.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def subset(self, index: list[int] | Tensor) -> MultiViewImages:
        return MultiViewImages(self.images[index], self.viewmats[index], self.Ks[index], self.background)


@dataclass(frozen=True)
class FitConfig:
    """Optimisation hyperparameters (learning rates in local, k-normalised units)."""

    iterations: int = 1000
    lr_means: float = 1e-2
    lr_means_final: float = 1e-3
    lr_log_scales: float = 2e-2
    lr_quats: float = 5e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 5e-2
    lambda_dssim: float = 0.2
    lambda_position: float = 1e-2
    position_threshold: float = 1.0
    lambda_scale: float = 1.0
    scale_threshold: float = 0.6
    densify_every: int = 0
    densify_until: float = 0.6
    densify_grad_threshold: float = 2e-4
    densify_scale_threshold: float = 0.3
    max_gaussians: int = 20000
    eval_every: int = 50
    backend: str = "native"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 0.0 <= self.lambda_dssim <= 1.0:
            raise ValueError(f"lambda_dssim must be in [0, 1], got {self.lambda_dssim}")
        if self.densify_every < 0 or self.eval_every < 0:
            raise ValueError("densify_every and eval_every must be >= 0")
        if self.backend not in ("native", "torch", "reference", "auto"):
            raise ValueError(f"backend must be native, torch, reference or auto, got {self.backend!r}")


@dataclass
class FitResult:
    """Fitted Gaussians and per-checkpoint metrics.

    ``history`` rows: step, loss, num_gaussians, train / held-out PSNR and SSIM.
    """

    gaussians: BoundGaussians
    history: list[dict[str, float]] = field(default_factory=list)


def separable_ssim(prediction: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM with the same definition as ``metrics.ssim`` (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03,
    valid windows, data range 1), computed with two 1-D convolutions in the input dtype (the fast path
    for the training loss; ``metrics.ssim`` is the reference).

    Args:
        prediction, target: [H, W, C] or [B, H, W, C], sides >= window_size.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {list(prediction.shape)} and target {list(target.shape)} differ")
    if prediction.ndim == 3:
        prediction, target = prediction[None], target[None]
    if prediction.ndim != 4 or min(prediction.shape[1:3]) < window_size:
        raise ValueError(
            f"prediction must be [B, H, W, C] with sides >= {window_size}, got {list(prediction.shape)}"
        )
    x, y = prediction.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2).to(prediction.dtype)
    channels = x.shape[1]
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    rows = _valid_blur_matrix(x.shape[2], window_size, sigma, x)
    cols = _valid_blur_matrix(x.shape[3], window_size, sigma, x)
    blurred = rows @ stacked @ cols.T
    mu_x, mu_y, xx, yy, xy = blurred.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def _valid_blur_matrix(length: int, window_size: int, sigma: float, like: Tensor) -> Tensor:
    """[length - window_size + 1, length] matrix applying a normalised 1-D Gaussian with 'valid' padding."""
    coords = torch.arange(window_size, dtype=like.dtype, device=like.device) - (window_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    out = length - window_size + 1
    matrix = torch.zeros(out, length, dtype=like.dtype, device=like.device)
    for offset in range(window_size):
        matrix[torch.arange(out), torch.arange(out) + offset] = g[offset]
    return matrix


def d_ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """D-SSIM = 1 - SSIM (3DGS code). prediction, target: [H, W, 3] or [B, H, W, 3], sides >= 11."""
    return 1.0 - separable_ssim(prediction, target)


def photometric_loss(prediction: Tensor, target: Tensor, lambda_dssim: float = 0.2) -> Tensor:
    """``(1 - lambda) L1 + lambda D-SSIM`` (3DGS, arXiv 2308.04079). Images [H, W, 3] or [B, H, W, 3]."""
    l1 = (prediction - target).abs().mean()
    if lambda_dssim == 0.0:
        return l1
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * d_ssim(prediction, target).to(l1.dtype)


def position_regulariser(local_means: Tensor, threshold: float = 1.0) -> Tensor:
    """GaussianAvatars ``mean ReLU(||mu_i|| - threshold)``; local_means [N, 3] in k-normalised units."""
    return torch.relu(local_means.norm(dim=-1) - threshold).mean()


def scale_regulariser(local_log_scales: Tensor, threshold: float = 0.6) -> Tensor:
    """GaussianAvatars ``mean ||ReLU(s_i - threshold)||`` with s = exp(local_log_scales) [N, 3]."""
    return torch.relu(torch.exp(local_log_scales) - threshold).norm(dim=-1).mean()


def orbit_cameras(
    num_views: int,
    *,
    distance: float = 0.45,
    yaw_range_degrees: float = 150.0,
    pitch_degrees: float = 10.0,
    offset: float = 0.0,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Tensor:
    """[V, 4, 4] viewmats on a front arc around +z, yaws evenly spaced, shifted by ``offset`` of a step.

    Alternate views are raised / lowered by ``pitch_degrees`` so the set sees the head from above and below.
    """
    if num_views <= 0:
        raise ValueError(f"num_views must be positive, got {num_views}")
    step = yaw_range_degrees / max(num_views - 1, 1) if num_views > 1 else 0.0
    centre = torch.tensor(target)
    mats = []
    for i in range(num_views):
        yaw = math.radians(-yaw_range_degrees / 2 + (i + offset) * step if num_views > 1 else offset * 30.0)
        pitch = math.radians(pitch_degrees * (1 if i % 2 == 0 else -1))
        eye = distance * torch.tensor(
            [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
        )
        mats.append(look_at(eye + centre, centre))
    return torch.stack(mats)


def render_views(  # noqa: PLR0917 - mirrors render(..., width, height, background)
    gaussians: BoundGaussians,
    frames: TriangleFrames,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor,
    *,
    backend: str = "native",
) -> Tensor:
    """[V, H, W, 3] renders of bound Gaussians on a fixed mesh (differentiable)."""
    world = bind_to_world(gaussians, frames)
    rgbs = [
        render(
            world.means, world.quats, world.scales, world.opacities, world.colors,
            viewmat, K, width, height, background, backend,
        ).rgb
        for viewmat, K in zip(viewmats, Ks)
    ]  # fmt: skip
    return torch.stack(rgbs)


def evaluate(
    gaussians: BoundGaussians, frames: TriangleFrames, views: MultiViewImages, backend: str = "native"
) -> dict[str, float]:
    """Mean PSNR and SSIM over ``views``."""
    with torch.no_grad():
        rgbs = render_views(
            gaussians, frames, views.viewmats, views.Ks, *views.size, views.background, backend=backend
        )
    scores = [(float(psnr(p, t)), float(ssim(p, t))) for p, t in zip(rgbs.clamp(0, 1), views.images)]
    return {"psnr": sum(s[0] for s in scores) / len(scores), "ssim": sum(s[1] for s in scores) / len(scores)}


def fit(
    initial: BoundGaussians,
    frames: TriangleFrames,
    train: MultiViewImages,
    config: FitConfig = FitConfig(),
    held_out: MultiViewImages | None = None,
) -> FitResult:
    """Optimise local Gaussian attributes (parents fixed) against ``train`` views; one view per step.

    Args:
        initial: starting Gaussians (e.g. ``init_one_per_triangle``).
        frames: the mesh's triangle frames (static subject).
        train / held_out: posed images; held-out views are only evaluated.

    Returns:
        FitResult with the fitted Gaussians and a history row every ``eval_every`` steps (and at the end).
    """
    if len(train) == 0:
        raise ValueError("train must contain at least one view")
    generator = torch.Generator().manual_seed(config.seed)
    params = _trainable(initial)
    optimiser = _optimiser(params, config)
    grad_accum, grad_count = torch.zeros(len(initial)), torch.zeros(len(initial))
    result = FitResult(initial)
    width, height = train.size
    bar = tqdm(range(config.iterations), desc="fit", disable=not config.progress)
    loss_value = float("nan")
    for step in bar:
        _set_mean_lr(optimiser, config, step)
        view = int(torch.randint(len(train), (1,), generator=generator))
        gaussians = replace(initial, **params)
        world = bind_to_world(gaussians, frames)
        out = render(
            world.means, world.quats, world.scales, world.opacities, world.colors,
            train.viewmats[view], train.Ks[view], width, height, train.background, config.backend,
        )  # fmt: skip
        means2d = out.meta.get("means2d")
        if means2d is not None and means2d.requires_grad:
            means2d.retain_grad()
        loss = total_loss(out.rgb, train.images[view], gaussians, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
        if means2d is not None and means2d.grad is not None:
            visible = out.meta["radii"].reshape(len(initial), -1).amax(-1) > 0
            grad_accum[visible] += means2d.grad.reshape(len(initial), -1)[visible, :2].norm(dim=-1)
            grad_count[visible] += 1
        if _should_densify(step, config, len(initial)):
            initial = densify(replace(initial, **{k: v.detach() for k, v in params.items()}),
                              grad_accum / grad_count.clamp(min=1), config, generator)  # fmt: skip
            params = _trainable(initial)
            optimiser = _optimiser(params, config)
            grad_accum, grad_count = torch.zeros(len(initial)), torch.zeros(len(initial))
        if config.eval_every and (step + 1) % config.eval_every == 0:
            result.history.append(_checkpoint(step + 1, loss_value, replace(initial, **params), frames, train,
                                              held_out, config))  # fmt: skip
            bar.set_postfix(psnr=f"{result.history[-1]['train_psnr']:.2f}", n=len(initial))
    final = _detached(replace(initial, **params))
    if not result.history or result.history[-1]["step"] != config.iterations:
        row = _checkpoint(config.iterations, loss_value, final, frames, train, held_out, config)
        result.history.append(row)
    result.gaussians = final
    return result


def total_loss(rgb: Tensor, target: Tensor, gaussians: BoundGaussians, config: FitConfig) -> Tensor:
    """Photometric loss + weighted GaussianAvatars position and scale regularisers."""
    return (
        photometric_loss(rgb, target, config.lambda_dssim)
        + config.lambda_position * position_regulariser(gaussians.local_means, config.position_threshold)
        + config.lambda_scale * scale_regulariser(gaussians.local_log_scales, config.scale_threshold)
    )


def densify(
    gaussians: BoundGaussians, mean_grad: Tensor, config: FitConfig, generator: torch.Generator | None = None
) -> BoundGaussians:
    """3DGS densification in local units: clone small / split large Gaussians with large screen gradients.

    mean_grad: [N] average norm of the screen-space mean gradient since the last densification.
    """
    room = config.max_gaussians - len(gaussians)
    if room <= 0:
        return gaussians
    candidates = mean_grad > config.densify_grad_threshold
    if int(candidates.sum()) > room:
        top = torch.topk(mean_grad, room).indices
        candidates = torch.zeros_like(candidates)
        candidates[top] = True
    large = torch.exp(gaussians.local_log_scales).amax(-1) > config.densify_scale_threshold
    cloned = clone(gaussians, candidates & ~large)
    split_mask = torch.cat([candidates & large, torch.zeros(len(cloned) - len(gaussians), dtype=torch.bool)])
    return split(cloned, split_mask, generator=generator)


def init_gaussians(
    num_triangles: int, per_triangle: int = 2, spread: float = 0.3, generator: torch.Generator | None = None
) -> BoundGaussians:
    """``per_triangle`` Gaussians on every triangle (GaussianAvatars init, generalised: our choice).

    Local means ~ N(0, spread^2), isotropic local scale 1/sqrt(per_triangle) (same covered area as one
    Gaussian of scale 1), identity rotation, opacity 0.1, random colours.
    """
    if per_triangle < 1:
        raise ValueError(f"per_triangle must be >= 1, got {per_triangle}")
    base = init_one_per_triangle(num_triangles, generator=generator)
    count = num_triangles * per_triangle
    return BoundGaussians(
        parents=base.parents.repeat(per_triangle),
        local_means=spread * torch.randn(count, 3, generator=generator)
        if per_triangle > 1
        else base.local_means,
        local_log_scales=torch.full((count, 3), -0.5 * math.log(per_triangle)),
        local_quats=base.local_quats.repeat(per_triangle, 1),
        opacity_logits=base.opacity_logits.repeat(per_triangle),
        sh0=rgb_to_sh0(torch.rand(count, 3, generator=generator)),
    )


def _detached(gaussians: BoundGaussians) -> BoundGaussians:
    return BoundGaussians(**{f.name: getattr(gaussians, f.name).detach() for f in fields(gaussians)})


def _trainable(gaussians: BoundGaussians) -> dict[str, Tensor]:
    return {name: getattr(gaussians, name).detach().clone().requires_grad_(True) for name in TRAINABLE}


def _optimiser(params: dict[str, Tensor], config: FitConfig) -> torch.optim.Adam:
    rates = {
        "local_means": config.lr_means,
        "local_log_scales": config.lr_log_scales,
        "local_quats": config.lr_quats,
        "opacity_logits": config.lr_opacity,
        "sh0": config.lr_sh0,
    }
    groups = [{"params": [params[name]], "lr": rates[name], "name": name} for name in TRAINABLE]
    return torch.optim.Adam(groups, eps=1e-15)


def _set_mean_lr(optimiser: torch.optim.Adam, config: FitConfig, step: int) -> None:
    t = step / max(config.iterations - 1, 1)
    lr = config.lr_means_final + 0.5 * (config.lr_means - config.lr_means_final) * (1 + math.cos(math.pi * t))
    optimiser.param_groups[0]["lr"] = lr


def _should_densify(step: int, config: FitConfig, count: int) -> bool:
    if not config.densify_every or count >= config.max_gaussians:
        return False
    return (step + 1) % config.densify_every == 0 and step + 1 < config.densify_until * config.iterations


def _checkpoint(  # noqa: PLR0917 - internal helper
    step: int,
    loss: float,
    gaussians: BoundGaussians,
    frames: TriangleFrames,
    train: MultiViewImages,
    held_out: MultiViewImages | None,
    config: FitConfig,
) -> dict[str, float]:
    row = {"step": step, "loss": loss, "num_gaussians": len(gaussians)}
    detached = _detached(gaussians)
    for prefix, views in (("train", train), ("held_out", held_out)):
        if views is not None:
            scores = evaluate(detached, frames, views, config.backend)
            row[f"{prefix}_psnr"], row[f"{prefix}_ssim"] = scores["psnr"], scores["ssim"]
    return row


@dataclass(frozen=True)
class SyntheticSubject:
    """A ground-truth avatar and its renders (for demos and tests)."""

    rig: BlendshapeRig
    frames: TriangleFrames
    ground_truth: BoundGaussians
    train: MultiViewImages
    held_out: MultiViewImages


def synthetic_subject(
    size: int = 64,
    *,
    num_train: int = 12,
    num_held_out: int = 4,
    subdivisions: int = 2,
    gaussians_per_triangle: float = 2.0,
    fov_y_degrees: float = 30.0,
    seed: int = 0,
    backend: str = "native",
) -> SyntheticSubject:
    """Procedural head (neutral pose) + random bound Gaussians, rendered from an orbit of cameras.

    Held-out cameras sit half-way between training cameras (novel views of the same arc). Colours are a
    smooth function of the Gaussian's position on the head plus per-Gaussian noise, like skin with
    texture; everything else comes from ``random_bound_gaussians``.
    """
    if size < 11:
        raise ValueError(f"size must be >= 11 (SSIM window), got {size}")
    generator = torch.Generator().manual_seed(seed)
    rig = procedural_head(subdivisions)
    frames = triangle_frames(rig.template, rig.faces)
    count = max(1, round(gaussians_per_triangle * rig.faces.shape[0]))
    gt = random_bound_gaussians(rig, count, generator)
    centres = frames.origins[gt.parents] / torch.tensor(HEAD_RADII)
    mixing = torch.tensor([[1.0, 0.3, 0.2], [0.2, 1.0, 0.5], [0.4, 0.1, 1.0]])
    smooth = 0.5 + 0.35 * torch.sin(3.0 * centres @ mixing)
    noise = 0.1 * torch.randn(count, 3, generator=generator)
    gt = replace(gt, sh0=rgb_to_sh0((smooth + noise).clamp(0.02, 0.98)))
    K = intrinsics_from_fov(size, size, fov_y_degrees)
    background = torch.ones(3)

    def views(viewmats: Tensor) -> MultiViewImages:
        Ks = K.expand(viewmats.shape[0], 3, 3).clone()
        images = render_views(gt, frames, viewmats, Ks, size, size, background, backend=backend).clamp(0, 1)
        return MultiViewImages(images, viewmats, Ks, background)

    train = views(orbit_cameras(num_train))
    between = orbit_cameras(num_held_out + 1, offset=0.5)[:num_held_out] if num_held_out > 1 else None
    held_out = views(between if between is not None else orbit_cameras(1, offset=0.5))
    return SyntheticSubject(rig, frames, gt, train, held_out)
