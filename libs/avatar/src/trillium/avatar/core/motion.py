"""Speaker-specific Motion Translator (Yu et al., GaussianTalker, arXiv 2404.14037, ACM MM 2024).

The paper maps audio to FLAME expression + jaw with two parts: a *Universal Audio Encoder* whose
identity decoupling removes the speaker from the audio features, and a *Customized Motion Decoder*
that turns those features plus a speaker embedding into that speaker's motion. Its exact layers are
not published; what we built (our design choices):

- **Universal audio encoder**: per video frame a 16 x 80 log-mel window (:mod:`.audio`), minus its
  own mean (log-gain invariance), standardised per mel bin with statistics fixed from the training
  set, through three 1-D convolutions over time and a linear layer to a ``content_dim`` code,
  layer-normalised.
- **Identity decoupling**: (1) window-local gain normalisation (rather than per-utterance instance
  norm, which would need audio that has not arrived yet when streaming); (2) speaker-specific motion
  is carried by the decoder's speaker embedding, so the encoder has no reason to encode identity;
  (3) optionally an adversarial speaker classifier on the content code behind a gradient-reversal
  layer (Ganin & Lempitsky, arXiv 1409.7495). On our espeak-ng data (3) cost accuracy without
  lowering a linear speaker probe, so the shipped model trains with it off (see ``train_motion``).
- **Temporal smoothing**: a learned depthwise convolution over ±``smoothing_radius`` frames of
  content codes (zero padding at the ends), with a residual connection.
- **Customised motion decoder**: an MLP whose hidden layer is FiLM-modulated (scale and shift) by a
  learned speaker embedding; outputs the ARKit mouth coefficients (sigmoid, in [0, 1]) and the jaw
  pitch in radians (linear), in :data:`~trillium.avatar.core.visemes.MOTION_CHANNELS` order.

:class:`StreamingMotion` consumes PCM chunks and emits the same per-frame outputs as
:meth:`MotionTranslator.predict`; its look-ahead is 160 ms (features) + ``smoothing_radius`` x 40 ms.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from trillium.avatar.core.audio import (
    N_MELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    StreamingFeatureWindows,
    feature_windows,
    log_mel,
    num_video_frames,
    resample,
    to_float_pcm,
)
from trillium.avatar.core.visemes import MOTION_CHANNELS

WEIGHTS_FORMAT = "trillium-motion-translator"


@dataclass(frozen=True)
class MotionTranslatorConfig:
    """Hyperparameters (defaults: ~0.2 M parameters, < 1 MB float32)."""

    n_mels: int = N_MELS
    window_frames: int = WINDOW_FRAMES
    hidden: int = 96
    content_dim: int = 64
    num_speakers: int = 6
    speaker_dim: int = 16
    smoothing_radius: int = 2
    num_coefficients: int = len(MOTION_CHANNELS) - 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < (0 if name == "smoothing_radius" else 1):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.window_frames % 4 != 0:
            raise ValueError(f"window_frames must be a multiple of 4, got {self.window_frames}")

    @property
    def num_channels(self) -> int:
        return self.num_coefficients + 1


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def gradient_reversal(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward, ``-scale * grad`` backward (Ganin & Lempitsky, arXiv 1409.7495)."""
    return _GradientReversal.apply(x, scale)


class UniversalAudioEncoder(nn.Module):
    """windows [..., 16, 80] -> content codes [..., content_dim]."""

    def __init__(self, config: MotionTranslatorConfig) -> None:
        super().__init__()
        h = config.hidden
        self.convs = nn.Sequential(
            nn.Conv1d(config.n_mels, h, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(h, h, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(h, h, 3, padding=1),
            nn.GELU(),
        )
        self.project = nn.Linear(h * (config.window_frames // 4), config.content_dim)
        self.norm = nn.LayerNorm(config.content_dim)
        self.register_buffer("input_mean", torch.zeros(config.n_mels))
        self.register_buffer("input_std", torch.full((config.n_mels,), 4.0))

    @torch.no_grad()
    def set_input_statistics(self, windows: Tensor) -> None:
        """Per-mel-bin mean and std of gain-normalised training windows [N, 16, 80] (fixed afterwards)."""
        x = self.gain_normalise(windows).reshape(-1, windows.shape[-1])
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp_min(1e-3))

    @staticmethod
    def gain_normalise(windows: Tensor) -> Tensor:
        """Subtract each window's mean log-mel (a gain change is an additive constant in log-mel)."""
        return windows - windows.mean(dim=(-2, -1), keepdim=True)

    def forward(self, windows: Tensor) -> Tensor:
        lead = windows.shape[:-2]
        x = self.gain_normalise(windows.reshape(-1, *windows.shape[-2:]))
        x = (x - self.input_mean) / self.input_std
        x = self.convs(x.transpose(1, 2)).flatten(1)
        return self.norm(self.project(x)).reshape(*lead, -1)


class CustomizedMotionDecoder(nn.Module):
    """content [B, F, D] + speaker ids [B] -> motion [B, F, C] (coefficients in [0, 1], jaw pitch in rad)."""

    def __init__(self, config: MotionTranslatorConfig) -> None:
        super().__init__()
        h = config.hidden
        self.speaker_embedding = nn.Embedding(config.num_speakers, config.speaker_dim)
        nn.init.normal_(self.speaker_embedding.weight, std=0.1)
        self.film = nn.Linear(config.speaker_dim, 2 * h)
        self.hidden_in = nn.Linear(config.content_dim, h)
        self.hidden_out = nn.Sequential(
            nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, config.num_channels)
        )
        self.num_coefficients = config.num_coefficients

    @torch.no_grad()
    def set_output_bias(self, mean_motion: Tensor) -> None:
        """Start from the mean training motion [C] (skips the slow 'learn the mean' phase of training)."""
        coefficients = mean_motion[: self.num_coefficients].clamp(1e-3, 1 - 1e-3)
        bias = torch.cat([torch.logit(coefficients), mean_motion[self.num_coefficients :]])
        self.hidden_out[-1].bias.copy_(bias)

    def forward(self, content: Tensor, speaker_ids: Tensor) -> Tensor:
        scale, shift = self.film(self.speaker_embedding(speaker_ids))[:, None, :].chunk(2, dim=-1)
        raw = self.hidden_out(self.hidden_in(content) * (1 + scale) + shift)
        coefficients = torch.sigmoid(raw[..., : self.num_coefficients])
        return torch.cat([coefficients, raw[..., self.num_coefficients :]], dim=-1)


class MotionTranslator(nn.Module):
    """Audio windows -> per-frame ARKit mouth coefficients + jaw pitch, for one of ``num_speakers``."""

    def __init__(self, config: MotionTranslatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or MotionTranslatorConfig()
        c = self.config
        self.encoder = UniversalAudioEncoder(c)
        self.temporal = nn.Conv1d(
            c.content_dim, c.content_dim, 2 * c.smoothing_radius + 1, groups=c.content_dim
        )
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)
        self.decoder = CustomizedMotionDecoder(c)
        self.speaker_classifier = nn.Sequential(
            nn.Linear(c.content_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.num_speakers)
        )

    def encode(self, windows: Tensor) -> Tensor:
        """windows [..., 16, 80] -> content [..., D] (identity-decoupled by training)."""
        return self.encoder(windows)

    def smooth(self, content: Tensor, mask: Tensor | None = None) -> Tensor:
        """Temporal mixing over ±r frames. content [B, F, D]; mask [B, F] bool (False = padding, zeroed)."""
        if mask is not None:
            content = content * mask[..., None]
        r = self.config.smoothing_radius
        padded = nn.functional.pad(content.transpose(1, 2), (r, r))
        return content + self.temporal(padded).transpose(1, 2)

    def decode(self, content: Tensor, speaker_ids: Tensor) -> Tensor:
        """content [B, F, D], speaker_ids [B] long -> motion [B, F, C]."""
        return self.decoder(content, speaker_ids)

    def forward(
        self, windows: Tensor, speaker_ids: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """windows [B, F, 16, 80], speaker_ids [B] -> (motion [B, F, C], unsmoothed content [B, F, D])."""
        if windows.ndim != 4 or windows.shape[-2:] != (self.config.window_frames, self.config.n_mels):
            raise ValueError(f"windows must be [B, F, {self.config.window_frames}, {self.config.n_mels}]")
        self._check_speakers(speaker_ids)
        content = self.encode(windows)
        return self.decode(self.smooth(content, mask), speaker_ids), content

    def speaker_logits(self, content: Tensor, reversal_scale: float = 1.0) -> Tensor:
        """Adversarial speaker classifier behind gradient reversal: content [..., D] -> logits [..., S]."""
        return self.speaker_classifier(gradient_reversal(content, reversal_scale))

    @torch.no_grad()
    def predict(self, pcm: Tensor | np.ndarray, sample_rate: int, speaker_id: int) -> Tensor:
        """Offline motion for a whole clip: [ceil(N16 / 640), C] over ``MOTION_CHANNELS`` at 25 fps."""
        signal = resample(to_float_pcm(pcm), sample_rate, SAMPLE_RATE)
        windows = feature_windows(log_mel(signal, SAMPLE_RATE), num_video_frames(signal.shape[0]))
        was_training = self.training
        self.eval()
        motion, _ = self(windows[None], torch.tensor([speaker_id]))
        self.train(was_training)
        return motion[0]

    def _check_speakers(self, speaker_ids: Tensor) -> None:
        if speaker_ids.ndim != 1 or bool(
            ((speaker_ids < 0) | (speaker_ids >= self.config.num_speakers)).any()
        ):
            raise ValueError(
                f"speaker_ids must be [B] in [0, {self.config.num_speakers}), got {speaker_ids.tolist()}"
            )


class StreamingMotion:
    """Frame-by-frame motion from PCM chunks (16 kHz); equals :meth:`MotionTranslator.predict`.

    Frame ``f`` is emitted once audio up to ``f / 25 s + 160 ms + r * 40 ms`` has arrived
    (``r`` = ``smoothing_radius``); :meth:`flush` emits the tail at the end of the stream.
    """

    def __init__(self, model: MotionTranslator, speaker_id: int) -> None:
        model._check_speakers(torch.tensor([speaker_id]))
        self.model = model.eval()
        self.speaker_ids = torch.tensor([speaker_id])
        self.radius = model.config.smoothing_radius
        self._windows = StreamingFeatureWindows()
        self._content = torch.zeros(self.radius, model.config.content_dim)  # left zero padding
        self._next_frame = 0

    @torch.no_grad()
    def push(self, pcm: Tensor | np.ndarray) -> Tensor:
        """Add 16 kHz samples; return motion [k, C] for frames that became complete."""
        self._append(self._windows.push(pcm))
        return self._emit(self._known_frames() - self.radius)

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End of stream: motion for the remaining frames [k, C]."""
        self._append(self._windows.flush())
        total = self._known_frames()
        self._content = torch.cat([self._content, torch.zeros(self.radius, self._content.shape[1])])
        return self._emit(total)

    def _known_frames(self) -> int:
        return self._windows.frames_emitted

    def _append(self, windows: Tensor) -> None:
        if windows.shape[0]:
            self._content = torch.cat([self._content, self.model.encode(windows)])

    def _emit(self, until_frame: int) -> Tensor:
        count = until_frame - self._next_frame
        if count <= 0:
            return torch.empty(0, self.model.config.num_channels)
        # rows of _content: frame (next_frame - radius) .. ; need frames next_frame - r .. until_frame - 1 + r
        span = self._content[: count + 2 * self.radius]
        r = self.radius
        mixed = span[r : r + count] + self.model.temporal(span.T[None])[0].T
        motion = self.model.decode(mixed[None], self.speaker_ids)[0]
        self._content = self._content[count:]
        self._next_frame = until_frame
        return motion


def save_motion_translator(model: MotionTranslator, path: str | Path, extra: dict | None = None) -> None:
    """Weights to one safetensors file with the config (and ``extra``) as JSON metadata."""
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(asdict(model.config)),
        "channels": json.dumps(list(MOTION_CHANNELS)),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    Path(path).chmod(0o644)  # a shipped asset, readable by the serving user


def load_motion_translator(path: str | Path) -> MotionTranslator:
    """Inverse of :func:`save_motion_translator`; raises ValueError on a file of another format."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"path {path} is not a {WEIGHTS_FORMAT} file")
    model = MotionTranslator(MotionTranslatorConfig(**json.loads(metadata["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
