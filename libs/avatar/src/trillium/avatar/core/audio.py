"""Log-mel audio features for audio-driven talking heads (pure torch, no model downloads).

The GaussianTalker family (Yu et al., arXiv 2404.14037; AD-NeRF, arXiv 2103.11078) feeds a window
of audio features around each 25 fps video frame to the motion network. The backbone of Yu et
al.'s "universal audio encoder" is not public, so the default front end is a log-mel spectrogram:

- 16 kHz mono, ``torch.stft`` with n_fft 1024, a 640-sample periodic Hann window (centred in the
  1024-point frame), hop 320 -> 50 feature frames per second, i.e. 2 per video frame;
  ``center=True`` with *zero* padding, so mel frame ``i`` is centred on sample ``320 i`` and sees
  samples ``[320 i - 320, 320 i + 320)`` (zeros outside the signal) — which is what makes the
  streaming path below exact;
- 80 triangular HTK mel filters (``mel = 2595 log10(1 + f / 700)``) from 0 to 8 kHz with peak 1
  (no area normalisation; our choice), applied to the power spectrum;
- ``log(mel + 1e-6)``, shape ``[T, 80]`` with ``T = 1 + N // 320`` for ``N`` samples.

Video frame ``f`` (time ``f / 25`` s) is centred on mel frame ``2 f`` and sees the 16 mel frames
``2f - 8 .. 2f + 7`` (±8 context, like the DeepSpeech ``[16 x 29]`` windows of AD-NeRF). Frames
outside the signal are filled with the log-mel of silence, ``log(1e-6)``.

Streaming latency (look-ahead): a window for frame ``f`` needs mel frame ``2f + 7``, whose analysis
window ends at sample ``640 f + 2560`` — 160 ms of audio after the frame's own time.

Other front ends (DeepSpeech, HuBERT, wav2vec2) need weights; they plug in through the
:class:`AudioFeatureExtractor` protocol when the weights exist on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16_000
N_FFT = 1024
WIN_LENGTH = 640
HOP_LENGTH = 320
N_MELS = 80
LOG_EPS = 1e-6
SILENCE_LOG_MEL = math.log(LOG_EPS)
VIDEO_FPS = 25
MEL_FRAMES_PER_VIDEO_FRAME = 2
CONTEXT = 8
WINDOW_FRAMES = 2 * CONTEXT
SAMPLES_PER_VIDEO_FRAME = SAMPLE_RATE // VIDEO_FPS


@runtime_checkable
class AudioFeatureExtractor(Protocol):
    """Turns mono PCM into per-frame features at ``frame_rate`` Hz, ``[T, feature_dim]``."""

    feature_dim: int
    frame_rate: int

    def __call__(self, pcm: Tensor | np.ndarray, sample_rate: int) -> Tensor: ...


@dataclass(frozen=True)
class LogMelExtractor:
    """The default :class:`AudioFeatureExtractor`: :func:`log_mel` (80 bins at 50 Hz)."""

    feature_dim: int = N_MELS
    frame_rate: int = SAMPLE_RATE // HOP_LENGTH

    def __call__(self, pcm: Tensor | np.ndarray, sample_rate: int) -> Tensor:
        return log_mel(pcm, sample_rate)


def to_float_pcm(pcm: Tensor | np.ndarray) -> Tensor:
    """Mono PCM as float32 in [-1, 1]: int16 is scaled by 1/32768, floats pass through. [N] -> [N]."""
    if isinstance(pcm, np.ndarray):
        pcm = torch.from_numpy(np.ascontiguousarray(pcm))
    if not isinstance(pcm, Tensor):
        raise ValueError(f"pcm must be a torch.Tensor or numpy array, got {type(pcm).__name__}")
    if pcm.ndim != 1:
        raise ValueError(f"pcm must be 1-D mono audio [N], got shape {tuple(pcm.shape)}")
    if pcm.dtype == torch.int16:
        return pcm.to(torch.float32) / 32768.0
    if not pcm.is_floating_point():
        raise ValueError(f"pcm must be int16 or floating point, got {pcm.dtype}")
    return pcm.to(torch.float32)


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_center_frequencies(n_mels: int = N_MELS, f_max: float = SAMPLE_RATE / 2) -> Tensor:
    """Centre frequencies (Hz) of the ``n_mels`` triangular filters, [n_mels] float64."""
    edges = mel_to_hz(
        torch.linspace(0.0, float(hz_to_mel(torch.tensor(f_max))), n_mels + 2, dtype=torch.float64)
    )
    return edges[1:-1]


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Triangular HTK mel filters over 0..sample_rate/2 with peak 1: [n_fft // 2 + 1, n_mels] float32."""
    f_max = sample_rate / 2
    edges = mel_to_hz(
        torch.linspace(0.0, float(hz_to_mel(torch.tensor(f_max))), n_mels + 2, dtype=torch.float64)
    )
    bins = torch.linspace(0.0, f_max, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def log_mel(pcm: Tensor | np.ndarray, sample_rate: int) -> Tensor:
    """Log-mel spectrogram of mono audio.

    Args:
        pcm: [N] int16 or float samples (mono). Resampled to 16 kHz with :func:`resample` if needed.
        sample_rate: Hz of ``pcm``.

    Returns:
        [T, 80] float32 with T = 1 + N16 // 320 (N16 = samples after resampling), 50 frames/s.
    """
    signal = resample(to_float_pcm(pcm), sample_rate, SAMPLE_RATE)
    spectrum = torch.stft(
        signal,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=torch.hann_window(WIN_LENGTH),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return power_to_log_mel(spectrum.abs().square().T)


def power_to_log_mel(power: Tensor) -> Tensor:
    """[T, n_fft // 2 + 1] power spectrum -> [T, 80] ``log(mel + 1e-6)``."""
    return torch.log(power @ mel_filterbank() + LOG_EPS)


def log_mel_of_frames(frames: Tensor) -> Tensor:
    """Log-mel of explicit analysis frames [T, 640] (signal samples ``[320 i - 320, 320 i + 320)``).

    The power spectrum of a Hann-windowed frame zero-padded to 1024 points does not depend on where
    the padding goes (a circular shift only changes the phase), so this equals :func:`log_mel`.
    """
    spectrum = torch.fft.rfft(frames * torch.hann_window(WIN_LENGTH), n=N_FFT)
    return power_to_log_mel(spectrum.abs().square())


def resample(
    signal: Tensor, orig_rate: int, new_rate: int, zero_crossings: int = 16, rolloff: float = 0.945
) -> Tensor:
    """Band-limited resampling with a Hann-windowed sinc kernel (vectorised gather).

    Output sample ``j`` is at time ``j / new_rate``; it is
    ``sum_n x[n] h(j / new_rate - n / orig_rate)`` with the low-pass
    ``h(t) = 2 fc sinc(2 fc t) w(t)``, cutoff ``fc = rolloff * min(orig, new) / 2`` (anti-aliasing
    when downsampling) and a Hann window spanning ``zero_crossings`` zero crossings of the sinc on
    each side. Samples outside the signal count as zero. Written by hand because torchaudio is not
    usable with our torch build; :func:`resample_reference` is the slow oracle.

    Args:
        signal: [N] float.
    Returns:
        [ceil(N * new_rate / orig_rate)] float32.
    """
    _check_rates(orig_rate, new_rate)
    if orig_rate == new_rate:
        return signal.to(torch.float32)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    n_out = math.ceil(signal.shape[0] * up / down)
    cutoff = rolloff * min(orig_rate, new_rate) / 2
    half_width = math.ceil(zero_crossings * orig_rate / (2 * cutoff))  # taps each side
    taps = torch.arange(-half_width, half_width + 1)
    phases = torch.arange(up)
    base = (phases * down) // up
    frac = (phases * down - base * up).to(torch.float64) / up  # output position - base, in input samples
    half_span = zero_crossings / (2 * cutoff)  # seconds
    kernel = _sinc_kernel((frac[:, None] - taps[None, :]) / orig_rate, cutoff, half_span) / orig_rate
    padded = torch.nn.functional.pad(signal.to(torch.float64), (half_width, half_width + down + 1))
    out = torch.empty(n_out, dtype=torch.float64)
    for phase in range(min(up, n_out)):  # phase p serves outputs p, p + up, ...; none when p >= n_out
        outputs = torch.arange(phase, n_out, up)
        centres = (outputs // up) * down + base[phase] + half_width
        gathered = padded[centres[:, None] + taps[None, :]]
        out[outputs] = gathered @ kernel[phase]
    return out.to(torch.float32)


def resample_reference(
    signal: Tensor, orig_rate: int, new_rate: int, zero_crossings: int = 16, rolloff: float = 0.945
) -> Tensor:
    """Slow, obvious version of :func:`resample`: one dot product per output sample (test oracle)."""
    _check_rates(orig_rate, new_rate)
    if orig_rate == new_rate:
        return signal.to(torch.float32)
    cutoff = rolloff * min(orig_rate, new_rate) / 2
    half_span = zero_crossings / (2 * cutoff)
    n_out = math.ceil(signal.shape[0] * new_rate / orig_rate)
    times = torch.arange(signal.shape[0], dtype=torch.float64) / orig_rate
    x = signal.to(torch.float64)
    out = torch.empty(n_out, dtype=torch.float64)
    for j in range(n_out):
        out[j] = (x * _sinc_kernel(j / new_rate - times, cutoff, half_span)).sum() / orig_rate
    return out.to(torch.float32)


def _sinc_kernel(t: Tensor, cutoff: float, half_span: float) -> Tensor:
    """``2 fc sinc(2 fc t)`` times a Hann window of half-width ``half_span`` seconds (0 outside)."""
    window = torch.where(
        t.abs() <= half_span, 0.5 + 0.5 * torch.cos(math.pi * t / half_span), torch.zeros_like(t)
    )
    return 2 * cutoff * torch.sinc(2 * cutoff * t) * window


def _check_rates(orig_rate: int, new_rate: int) -> None:
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")


def num_video_frames(num_samples: int) -> int:
    """Video frames (25 fps) covering ``num_samples`` of 16 kHz audio: ``ceil(N / 640)``."""
    return -(-num_samples // SAMPLES_PER_VIDEO_FRAME)


def feature_windows(features: Tensor, num_frames: int) -> Tensor:
    """Per-video-frame context windows.

    Args:
        features: [T, D] 50 Hz features (log-mel).
        num_frames: video frames F to produce (usually :func:`num_video_frames`).

    Returns:
        [F, 16, D]: window f holds feature frames ``2f - 8 .. 2f + 7``, silence (``log 1e-6``) outside.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [T, D], got {tuple(features.shape)}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    needed = 2 * num_frames + CONTEXT
    right = max(0, needed - features.shape[0])
    padded = torch.nn.functional.pad(features, (0, 0, CONTEXT, right), value=SILENCE_LOG_MEL)
    starts = torch.arange(num_frames) * MEL_FRAMES_PER_VIDEO_FRAME
    return padded[starts[:, None] + torch.arange(WINDOW_FRAMES)[None, :]]


class StreamingLogMel:
    """Log-mel of a 16 kHz stream fed in chunks of any length; equals :func:`log_mel` frame for frame.

    Mel frame ``i`` is emitted once samples up to ``320 i + 320`` have arrived; :meth:`flush` pads
    the end with zeros exactly like the offline ``center=True`` zero padding.
    """

    def __init__(self) -> None:
        self._buffer = torch.zeros(HOP_LENGTH)  # the zero padding before the first sample
        self._buffer_start = -HOP_LENGTH  # signal index of _buffer[0]
        self._next_frame = 0
        self._num_samples = 0
        self._flushed = False

    def push(self, pcm: Tensor | np.ndarray) -> Tensor:
        """Add samples [n] (int16 or float, 16 kHz); return the newly complete mel frames [k, 80]."""
        if self._flushed:
            raise ValueError("pcm pushed after flush(); create a new StreamingLogMel")
        chunk = to_float_pcm(pcm)
        self._buffer = torch.cat([self._buffer, chunk])
        self._num_samples += chunk.shape[0]
        return self._emit(available=self._num_samples)

    def flush(self) -> Tensor:
        """End of stream: the remaining mel frames (up to ``N // 320``), [k, 80]."""
        if self._flushed:
            return torch.empty(0, N_MELS)
        self._flushed = True
        last_end = (self._num_samples // HOP_LENGTH) * HOP_LENGTH + HOP_LENGTH
        self._buffer = torch.cat([self._buffer, torch.zeros(max(0, last_end - self._num_samples))])
        return self._emit(available=last_end)

    def _emit(self, available: int) -> Tensor:
        count = max(0, (available - HOP_LENGTH) // HOP_LENGTH + 1 - self._next_frame)
        if count == 0:
            return torch.empty(0, N_MELS)
        starts = (self._next_frame + torch.arange(count)) * HOP_LENGTH - HOP_LENGTH - self._buffer_start
        frames = self._buffer[starts[:, None] + torch.arange(WIN_LENGTH)[None, :]]
        self._next_frame += count
        drop = self._next_frame * HOP_LENGTH - HOP_LENGTH - self._buffer_start
        self._buffer = self._buffer[drop:]
        self._buffer_start += drop
        return log_mel_of_frames(frames)


class StreamingFeatureWindows:
    """Per-video-frame feature windows [k, 16, 80] from a 16 kHz PCM stream; equals the offline
    :func:`feature_windows` of :func:`log_mel` with ``num_video_frames(N)`` frames.

    Latency: frame ``f`` is emitted once mel frame ``2f + 7`` exists, i.e. 160 ms of audio after
    the frame's time (plus the chunking delay of the caller).
    """

    def __init__(self) -> None:
        self._mel = StreamingLogMel()
        self._features = torch.full((CONTEXT, N_MELS), SILENCE_LOG_MEL)  # left silence padding
        self._features_start = -CONTEXT  # mel index of _features[0]
        self._next_frame = 0
        self._num_samples = 0

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    def push(self, pcm: Tensor | np.ndarray) -> Tensor:
        """Add samples; return windows for the newly complete video frames, [k, 16, 80]."""
        chunk = to_float_pcm(pcm)
        self._num_samples += chunk.shape[0]
        self._append(self._mel.push(chunk))
        available = self._features_start + self._features.shape[0]  # mel frames known
        count = max(0, (available - CONTEXT) // MEL_FRAMES_PER_VIDEO_FRAME + 1 - self._next_frame)
        return self._emit(count)

    def flush(self) -> Tensor:
        """End of stream: windows for the remaining frames up to ``num_video_frames(N)``."""
        self._append(self._mel.flush())
        count = max(0, num_video_frames(self._num_samples) - self._next_frame)
        needed = 2 * (self._next_frame + count) + CONTEXT
        missing = needed - (self._features_start + self._features.shape[0])
        if missing > 0:
            self._append(torch.full((missing, N_MELS), SILENCE_LOG_MEL))
        return self._emit(count)

    def _append(self, mel: Tensor) -> None:
        self._features = torch.cat([self._features, mel])

    def _emit(self, count: int) -> Tensor:
        if count == 0:
            return torch.empty(0, WINDOW_FRAMES, N_MELS)
        starts = (
            (self._next_frame + torch.arange(count)) * MEL_FRAMES_PER_VIDEO_FRAME
            - CONTEXT
            - self._features_start
        )
        windows = self._features[starts[:, None] + torch.arange(WINDOW_FRAMES)[None, :]]
        self._next_frame += count
        drop = self._next_frame * MEL_FRAMES_PER_VIDEO_FRAME - CONTEXT - self._features_start
        self._features = self._features[drop:]
        self._features_start += drop
        return windows
