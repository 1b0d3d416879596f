"""Log-mel features, resampling and the streaming feature buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trillium.avatar.core.audio import (
    CONTEXT,
    N_MELS,
    SILENCE_LOG_MEL,
    WINDOW_FRAMES,
    AudioFeatureExtractor,
    LogMelExtractor,
    StreamingFeatureWindows,
    StreamingLogMel,
    feature_windows,
    log_mel,
    mel_center_frequencies,
    mel_filterbank,
    num_video_frames,
    resample,
    resample_reference,
)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


def dominant_frequency(signal: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(signal.double() * torch.hann_window(signal.shape[0], dtype=torch.float64))
    return float(spectrum.abs().argmax()) * rate / signal.shape[0]


def push_in_random_chunks(stream, signal: torch.Tensor, seed: int, max_chunk: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    outputs, start = [], 0
    while start < signal.shape[0]:
        size = int(torch.randint(1, max_chunk, (1,), generator=g))
        outputs.append(stream.push(signal[start : start + size]))
        start += size
    outputs.append(stream.flush())
    return torch.cat(outputs)


@pytest.mark.parametrize("num_samples", [1, 319, 320, 16_000, 16_123])
def test_log_mel_shape_is_50_frames_per_second(num_samples: int) -> None:
    features = log_mel(torch.zeros(num_samples), 16_000)
    assert features.shape == (1 + num_samples // 320, N_MELS)
    assert torch.allclose(features, torch.full_like(features, SILENCE_LOG_MEL))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3500.0])
def test_pure_tone_peaks_in_the_nearest_mel_filter(freq: float) -> None:
    features = log_mel(tone(freq, 1.0, 16_000), 16_000)
    expected = int((mel_center_frequencies() - freq).abs().argmin())
    assert int(features[5:-5].mean(0).argmax()) == expected


def test_log_mel_accepts_int16_numpy_like_float() -> None:
    signal = tone(440.0, 0.3, 16_000)
    as_int16 = np.round(signal.numpy() * 32768).astype(np.int16)
    from_int16, from_float = log_mel(as_int16, 16_000).exp(), log_mel(signal, 16_000).exp()
    assert torch.allclose(from_int16, from_float, rtol=1e-2, atol=1e-3)  # same scale; quantisation noise only
    extractor = LogMelExtractor()
    assert isinstance(extractor, AudioFeatureExtractor)
    assert extractor.frame_rate == 50 and extractor(signal, 16_000).shape[1] == extractor.feature_dim


def test_mel_filterbank_is_triangular_htk_with_unit_peaks() -> None:
    bank = mel_filterbank()
    assert bank.shape == (513, 80)
    assert float(bank.min()) >= 0.0 and float(bank.max(0).values.min()) > 0.5  # every filter covers a bin
    assert float(bank.max()) <= 1.0 + 1e-6
    centres = mel_center_frequencies()
    assert 2595 * math.log10(1 + float(centres[1]) / 700) == pytest.approx(
        2 * 2595 * math.log10(1 + 8000 / 700) / 81
    )


@pytest.mark.parametrize("freq", [220.0, 1000.0, 5000.0])
def test_resampler_preserves_a_tone(freq: float) -> None:
    out = resample(tone(freq, 1.0, 22_050), 22_050, 16_000)
    assert out.shape[0] == 16_000
    t = torch.arange(16_000, dtype=torch.float64) / 16_000
    expected = 0.5 * torch.sin(2 * math.pi * freq * t)
    assert torch.allclose(out[500:-500].double(), expected[500:-500], atol=5e-3)
    assert dominant_frequency(out, 16_000) == pytest.approx(freq, abs=1.5)


def test_resampler_removes_frequencies_above_the_new_nyquist() -> None:
    out = resample(tone(10_000.0, 0.5, 22_050), 22_050, 16_000)
    assert float(out[300:-300].abs().max()) < 0.02


def test_resampler_matches_the_slow_reference() -> None:
    signal = torch.randn(1500, generator=torch.Generator().manual_seed(0))
    for orig, new in ((22_050, 16_000), (16_000, 22_050), (48_000, 16_000)):
        fast, slow = resample(signal, orig, new), resample_reference(signal, orig, new)
        assert torch.allclose(fast, slow, atol=1e-5), (orig, new)


@pytest.mark.parametrize("length", [0, 1, 2, 7, 40])
@pytest.mark.parametrize(("orig", "new"), [(44_101, 16_000), (16_000, 44_101), (8_000, 16_000)])
def test_resampler_handles_signals_shorter_than_its_phase_count(length: int, orig: int, new: int) -> None:
    # 44101 and 16000 are coprime: 16000 or 44101 polyphase phases, far more than output samples
    signal = torch.randn(length, generator=torch.Generator().manual_seed(length))
    fast, slow = resample(signal, orig, new), resample_reference(signal, orig, new)
    assert fast.shape == slow.shape == (math.ceil(length * new / orig),)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_resampler_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="orig_rate"):
        resample(torch.zeros(10), 0, 16_000)
    with pytest.raises(ValueError, match="pcm"):
        log_mel(torch.zeros(2, 10), 16_000)


def test_feature_windows_hold_plus_minus_eight_frames() -> None:
    features = torch.arange(41 * 80, dtype=torch.float32).reshape(41, 80)
    windows = feature_windows(features, num_video_frames(320 * 40))
    assert windows.shape == (20, WINDOW_FRAMES, 80)
    assert torch.equal(windows[5], features[10 - CONTEXT : 10 + CONTEXT])
    assert torch.all(windows[0, :CONTEXT] == SILENCE_LOG_MEL)
    assert torch.equal(windows[0, CONTEXT], features[0])
    assert torch.all(windows[19, -1] == SILENCE_LOG_MEL)  # mel frame 45 is past the end


@pytest.mark.parametrize("num_samples,seed", [(16_123, 0), (6_400, 1), (700, 2)])
def test_streaming_log_mel_equals_offline(num_samples: int, seed: int) -> None:
    signal = torch.randn(num_samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    streamed = push_in_random_chunks(StreamingLogMel(), signal, seed, max_chunk=900)
    offline = log_mel(signal, 16_000)
    assert streamed.shape == offline.shape
    assert torch.allclose(streamed, offline, atol=1e-4)


@pytest.mark.parametrize("num_samples,seed", [(16_123, 3), (12_800, 4), (100, 5)])
def test_streaming_windows_equal_offline(num_samples: int, seed: int) -> None:
    signal = torch.randn(num_samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    streamed = push_in_random_chunks(StreamingFeatureWindows(), signal, seed, max_chunk=1500)
    offline = feature_windows(log_mel(signal, 16_000), num_video_frames(num_samples))
    assert streamed.shape == offline.shape == (num_video_frames(num_samples), WINDOW_FRAMES, N_MELS)
    assert torch.allclose(streamed, offline, atol=1e-4)


def test_streaming_windows_latency_is_160_ms() -> None:
    stream = StreamingFeatureWindows()
    assert stream.push(torch.zeros(2559)).shape[0] == 0  # frame 0 needs samples up to 2560
    assert stream.push(torch.zeros(1)).shape[0] == 1
    assert stream.push(torch.zeros(640)).shape[0] == 1
