"""The streaming resampler of Animate's audio input vs the slow reference and the offline resampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trillium.avatar.core.audio import resample
from trillium.avatar.service.resample import StreamingResampler, resample_reference

MODEL_RATE = 16_000


def stream(signal: np.ndarray, in_rate: int, chunk_sizes) -> np.ndarray:
    """Push ``signal`` through a fresh resampler in chunks of the given sizes (cycled), then flush."""
    resampler = StreamingResampler(in_rate, MODEL_RATE)
    parts, start, sizes = [], 0, iter(chunk_sizes)
    while start < signal.shape[0]:
        size = next(sizes)
        parts.append(resampler.push(signal[start : start + size]))
        start += size
    parts.append(resampler.flush())
    return np.concatenate(parts)


def random_chunks(seed: int):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(1, 500))


@pytest.mark.parametrize("in_rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000])
def test_streaming_equals_the_slow_reference_for_any_chunking(in_rate):
    signal = np.random.default_rng(in_rate).standard_normal(in_rate // 20 + 7)  # 50 ms
    expected = resample_reference(signal, in_rate, MODEL_RATE)
    assert expected.shape == (-(-signal.shape[0] * MODEL_RATE // in_rate),)
    for seed in range(2):
        got = stream(signal, in_rate, random_chunks(seed))
        np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(stream(signal, in_rate, [signal.shape[0]]), expected, atol=2e-6)
    np.testing.assert_allclose(stream(signal, in_rate, iter(lambda: 1, 0)), expected, atol=2e-6)


@pytest.mark.parametrize("in_rate", [22_050, 44_100])
def test_streaming_equals_the_offline_resampler_the_model_was_trained_through(in_rate):
    signal = np.random.default_rng(1).uniform(-1, 1, in_rate)  # 1 s
    offline = resample(torch.from_numpy(signal), in_rate, MODEL_RATE).numpy()
    got = stream(signal, in_rate, [in_rate // 50] * 60)  # 20 ms chunks
    np.testing.assert_allclose(got, offline, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "frequency"), [(44_100, 440.0), (48_000, 3_000.0), (8_000, 1_000.0)])
def test_a_sine_keeps_its_frequency_without_clicks_at_chunk_boundaries(in_rate, frequency):
    signal = np.sin(2 * np.pi * frequency * np.arange(in_rate) / in_rate)  # 1 s
    out = stream(signal, in_rate, [in_rate // 50] * 60)  # 20 ms chunks: 49 boundaries
    assert out.shape == (MODEL_RATE,)
    ideal = np.sin(2 * np.pi * frequency * np.arange(MODEL_RATE) / MODEL_RATE)
    interior = slice(400, MODEL_RATE - 400)  # away from the zero padding at both ends
    assert np.abs(out - ideal)[interior].max() < 2e-3  # every sample, boundaries included
    spectrum = np.abs(np.fft.rfft(out[interior] * np.hanning(out[interior].shape[0])))
    peak = np.fft.rfftfreq(out[interior].shape[0], 1 / MODEL_RATE)[spectrum.argmax()]
    assert abs(peak - frequency) <= 1.0


def test_tones_above_the_new_nyquist_are_removed_not_aliased():
    in_rate = 48_000
    tone = np.sin(2 * np.pi * 12_000 * np.arange(in_rate) / in_rate)  # would alias to 4 kHz
    out = stream(tone, in_rate, [960] * 50)
    assert np.sqrt(np.mean(out[400:-400] ** 2)) < 1e-3  # vs 0.707 for the tone itself


def test_sixteen_khz_passes_through_unchanged_and_bad_use_raises():
    resampler = StreamingResampler(MODEL_RATE, MODEL_RATE)
    samples = np.linspace(-1, 1, 321, dtype=np.float32)
    np.testing.assert_array_equal(resampler.push(samples), samples)
    assert resampler.flush().shape == (0,) and resampler.latency_seconds == 0.0
    assert 0 < StreamingResampler(44_100, MODEL_RATE).latency_seconds < 0.002
    flushed = StreamingResampler(44_100, MODEL_RATE)
    flushed.flush()
    with pytest.raises(ValueError, match="after flush"):
        flushed.push(samples)
    with pytest.raises(ValueError, match="in_rate"):
        StreamingResampler(0, MODEL_RATE)
