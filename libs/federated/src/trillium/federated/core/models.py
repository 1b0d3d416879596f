"""Small CPU-fast models with the encoder / decoder split FedCFA needs (arXiv 2412.18904, §"factors").

``encoder(x) -> z`` produces the latent factors (channels of ``z``), ``decoder(z) -> logits`` is the
rest of the network including the classifier. Every strategy trains the same models; only FedCFA
looks inside. No normalisation layers: model states hold parameters only, so averaging is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

POOLED_SIZE = 4


class SplitModel(nn.Module):
    """``forward(x) = decoder(encoder(x))``; ``z`` is ``[B, C]`` (MLP) or ``[B, C, H, W]`` (CNN)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, num_factors: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.num_factors = num_factors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self.decoder(self.encoder(x))

    def forward_with_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, num_classes], z [B, C, ...])``."""
        z = self.encoder(x)
        return self.decoder(z), z


@dataclass(frozen=True)
class ModelSpec:
    """What to build: ``kind`` ∈ {"mlp", "cnn"}, input shape without batch, classes, widths."""

    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    factors: int = 32
    hidden: int = 64

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "cnn"):
            raise ValueError(f"kind must be 'mlp' or 'cnn', got {self.kind!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.factors < 2 or self.hidden < 1:
            raise ValueError("factors must be >= 2 and hidden >= 1")
        if self.kind == "cnn" and len(self.input_shape) != 3:
            raise ValueError(f"cnn needs input_shape (C, H, W), got {self.input_shape}")


def build_mlp(spec: ModelSpec) -> SplitModel:
    """Encoder ``Flatten → Linear → ReLU → Linear(C) → ReLU``; decoder ``Linear → ReLU → Linear``."""
    in_features = 1
    for size in spec.input_shape:
        in_features *= size
    encoder = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, spec.hidden),
        nn.ReLU(),
        nn.Linear(spec.hidden, spec.factors),
        nn.ReLU(),
    )
    decoder = nn.Sequential(
        nn.Linear(spec.factors, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.num_classes)
    )
    return SplitModel(encoder, decoder, spec.factors)


def build_cnn(spec: ModelSpec) -> SplitModel:
    """Encoder = 3×3 stem + one 3×3 conv (a 2× max-pool first when H ≥ 16), ``z: [B, C, H', W']``;
    decoder = strided 3×3 conv + average pool to 4×4 + linear classifier (a ResNet cut in
    miniature; a 4×4 rather than a global pool keeps the layout small digits need)."""
    channels, height, _ = spec.input_shape
    stem: list[nn.Module] = [nn.Conv2d(channels, spec.factors, 3, padding=1), nn.ReLU()]
    if height >= 16:
        stem.append(nn.MaxPool2d(2))
    encoder = nn.Sequential(*stem, nn.Conv2d(spec.factors, spec.factors, 3, padding=1), nn.ReLU())
    decoder = nn.Sequential(
        nn.Conv2d(spec.factors, spec.hidden, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(POOLED_SIZE),
        nn.Flatten(),
        nn.Linear(spec.hidden * POOLED_SIZE**2, spec.num_classes),
    )
    return SplitModel(encoder, decoder, spec.factors)


def build_model(spec: ModelSpec, seed: int | None = None) -> SplitModel:
    """Build ``spec``; with ``seed`` the initial weights are reproducible."""
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return build_model(spec)
    return build_mlp(spec) if spec.kind == "mlp" else build_cnn(spec)
