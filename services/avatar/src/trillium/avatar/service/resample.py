"""Stream-safe band-limited resampling of PCM audio to the motion model's 16 kHz.

Output sample ``j`` sits at time ``j / out_rate`` and is the windowed-sinc interpolation
(Smith, "Digital Audio Resampling", the bandlimited interpolation formula)

    y[j] = sum_n x[n] h(j / out_rate - n / in_rate),   h(t) = 2 fc sinc(2 fc t) w(t) / in_rate,

with cutoff ``fc = rolloff * min(in_rate, out_rate) / 2`` (so downsampling is anti-aliased) and a
Hann window ``w`` spanning ``zero_crossings`` zero crossings of the sinc on each side; samples before
the stream and after its end count as zero. These are the formula and defaults of the offline
``trillium.avatar.core.audio.resample`` the model was trained through, so streaming a signal in
chunks of any length gives the same samples as resampling it whole (no clicks at chunk boundaries).

:class:`StreamingResampler` keeps the last ``2 * half_width`` input samples between chunks (the
filter state) and emits output ``j`` as soon as input sample ``floor(j * in / out) + half_width``
has arrived, i.e. a look-ahead of ``half_width / in_rate`` seconds (about 1 ms with the defaults).
:func:`resample_reference` is the slow obvious version (one dot product over the whole input per
output sample), used as the test oracle.
"""

from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 16
ROLLOFF = 0.945


class StreamingResampler:
    """Mono float PCM chunks at ``in_rate`` -> float32 chunks at ``out_rate`` (both integer Hz)."""

    def __init__(
        self, in_rate: int, out_rate: int, zero_crossings: int = ZERO_CROSSINGS, rolloff: float = ROLLOFF
    ) -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if not isinstance(rate, int) or rate <= 0:
                raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")
        if not 0.0 < rolloff <= 1.0 or zero_crossings < 1:
            raise ValueError("rolloff must be in (0, 1] and zero_crossings >= 1")
        g = math.gcd(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        self.up, self.down = out_rate // g, in_rate // g
        self.cutoff = rolloff * min(in_rate, out_rate) / 2
        self.half_span = zero_crossings / (2 * self.cutoff)  # seconds
        self.half_width = math.ceil(zero_crossings * in_rate / (2 * self.cutoff))  # input taps each side
        self._taps = np.arange(-self.half_width, self.half_width + 1)
        self._buffer = np.zeros(self.half_width)  # zeros before the stream
        self._buffer_start = -self.half_width  # input index of _buffer[0]
        self._received = 0
        self._next_out = 0
        self._flushed = False

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    @property
    def latency_seconds(self) -> float:
        """Input look-ahead before an output sample can be emitted."""
        return 0.0 if self.passthrough else self.half_width / self.in_rate

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input samples [n]; return the newly computable output samples [k] float32."""
        if self._flushed:
            raise ValueError("samples pushed after flush(); create a new StreamingResampler")
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        if self.passthrough:
            return samples.astype(np.float32)
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += samples.shape[0]
        # output j needs input up to floor(j * down / up) + half_width < received
        last_centre = self._received - 1 - self.half_width
        ready = -(-(last_centre + 1) * self.up // self.down) if last_centre >= 0 else 0
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        """End of stream: the remaining output samples, up to ``ceil(N * out / in)`` in total."""
        if self._flushed or self.passthrough:
            self._flushed = True
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        total = -(-self._received * self.up // self.down)
        self._buffer = np.concatenate([self._buffer, np.zeros(self.half_width + 1)])  # zeros after the end
        return self._emit(total)

    def _emit(self, until: int) -> np.ndarray:
        count = until - self._next_out
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        outputs = np.arange(self._next_out, until, dtype=np.int64)
        centres = outputs * self.down // self.up  # input sample at or before each output's time
        offsets = (outputs * self.down - centres * self.up) / self.up  # in input samples, [0, 1)
        weights = self._kernel((offsets[:, None] - self._taps[None, :]) / self.in_rate)  # [k, taps]
        gathered = self._buffer[centres[:, None] + self._taps[None, :] - self._buffer_start]
        out = (gathered * weights).sum(axis=1)
        self._next_out = until
        keep_from = self._next_out * self.down // self.up - self.half_width
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return out.astype(np.float32)

    def _kernel(self, t: np.ndarray) -> np.ndarray:
        return sinc_kernel(t, self.cutoff, self.half_span) / self.in_rate


def sinc_kernel(t: np.ndarray, cutoff: float, half_span: float) -> np.ndarray:
    """``2 fc sinc(2 fc t)`` times a Hann window of half-width ``half_span`` seconds (0 outside)."""
    window = np.where(np.abs(t) <= half_span, 0.5 + 0.5 * np.cos(np.pi * t / half_span), 0.0)
    return 2 * cutoff * np.sinc(2 * cutoff * t) * window


def resample_reference(
    signal: np.ndarray,
    in_rate: int,
    out_rate: int,
    zero_crossings: int = ZERO_CROSSINGS,
    rolloff: float = ROLLOFF,
) -> np.ndarray:
    """Slow, obvious resampling of a whole signal [N] -> [ceil(N * out / in)]: the formula above,
    summed over every input sample for every output sample."""
    if in_rate == out_rate:
        return np.asarray(signal, dtype=np.float32)
    cutoff = rolloff * min(in_rate, out_rate) / 2
    half_span = zero_crossings / (2 * cutoff)
    x = np.asarray(signal, dtype=np.float64)
    times = np.arange(x.shape[0]) / in_rate
    out = np.empty(-(-x.shape[0] * out_rate // in_rate))
    for j in range(out.shape[0]):
        out[j] = (x * sinc_kernel(j / out_rate - times, cutoff, half_span)).sum() / in_rate
    return out.astype(np.float32)
