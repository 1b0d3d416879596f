"""Feature extraction for the av-tiny codebooks, in pure numpy (no torchaudio).

- Video: each ``patch x patch`` RGB patch is average-pooled by ``pool`` and flattened, scaled to
  ``[0, 1]`` (``patch=8, pool=2`` gives 4 x 4 x 3 = 48 features per patch).
- Audio: the waveform is cut into non-overlapping windows; each window is Hann-weighted, its power
  spectrum is projected onto a triangular mel filterbank (HTK mel scale,
  ``mel = 2595 log10(1 + f / 700)``) and log-compressed — the standard log-mel frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureConfig:
    """Feature hyperparameters (saved with the processor).

    Attributes:
        patch: video patch side in pixels; frames must be multiples of it.
        pool: average-pooling factor inside a patch.
        sample_rate: audio is resampled to this rate (Hz).
        window_samples: samples per audio token (at ``sample_rate``).
        n_fft: FFT size of each audio window (>= ``window_samples``).
        n_mels: mel bands.
    """

    patch: int = 8
    pool: int = 2
    sample_rate: int = 8000
    window_samples: int = 800
    n_fft: int = 1024
    n_mels: int = 20

    @property
    def video_dim(self) -> int:
        return (self.patch // self.pool) ** 2 * 3


def patch_features(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Patch features of RGB ``frames`` ``[T, H, W, 3]`` (uint8) -> ``[T, H/p, W/p, video_dim]`` float32."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {frames.shape}")
    t, h, w, _ = frames.shape
    p, q = config.patch, config.pool
    if h % p or w % p:
        raise ValueError(f"frames height and width must be multiples of patch={p}, got {h}x{w}")
    x = (
        frames.astype(np.float32).reshape(t, h // p, p // q, q, w // p, p // q, q, 3).mean(axis=(3, 6))
        / 255.0
    )
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(t, h // p, w // p, config.video_dim)


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` spanning 0 Hz to Nyquist."""
    n_bins = config.n_fft // 2 + 1
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges_hz = to_hz(np.linspace(to_mel(0.0), to_mel(config.sample_rate / 2), config.n_mels + 2))
    bin_hz = np.linspace(0.0, config.sample_rate / 2, n_bins)
    bank = np.zeros((config.n_mels, n_bins), dtype=np.float32)
    for m in range(config.n_mels):
        low, centre, high = edges_hz[m], edges_hz[m + 1], edges_hz[m + 2]
        rising = (bin_hz - low) / max(centre - low, 1e-9)
        falling = (high - bin_hz) / max(high - centre, 1e-9)
        bank[m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Linear-interpolation resampling of mono ``audio`` ``[N]`` from ``rate`` to ``target_rate``."""
    if rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {rate}")
    if rate == target_rate:
        return audio
    n_out = int(round(audio.shape[0] * target_rate / rate))
    return np.interp(np.arange(n_out) * rate / target_rate, np.arange(audio.shape[0]), audio).astype(
        np.float32
    )


def pcm_to_float(audio: np.ndarray) -> np.ndarray:
    """Mono float32 PCM in [-1, 1] from int16 or float input ``[N]`` (or ``[N, C]``, averaged)."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.dtype.kind == "f" else audio.astype(np.float64).mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"audio must have shape [N] or [N, channels], got {audio.shape}")
    if audio.dtype == np.int16 or audio.dtype.kind in "iu":
        return (audio.astype(np.float32) / 32768.0).astype(np.float32)
    if audio.dtype.kind == "f":
        return audio.astype(np.float32)
    raise ValueError(f"audio must be int16 or float PCM, got dtype {audio.dtype}")


def log_mel_frames(audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel frames ``[N // window_samples, n_mels]`` of float PCM ``audio`` at ``config.sample_rate``."""
    n = audio.shape[0] // config.window_samples
    windows = audio[: n * config.window_samples].reshape(n, config.window_samples)
    windows = windows * np.hanning(config.window_samples).astype(np.float32)
    power = np.abs(np.fft.rfft(windows, n=config.n_fft, axis=1)) ** 2
    return np.log10(power @ mel_filterbank(config).T + 1e-6).astype(np.float32)
