"""MotionTranslator shapes, speaker conditioning, identity-decoupling pieces, streaming == offline."""

from __future__ import annotations

import pytest
import torch

from trillium.avatar.core.audio import num_video_frames
from trillium.avatar.core.motion import (
    MotionTranslator,
    MotionTranslatorConfig,
    StreamingMotion,
    gradient_reversal,
    load_motion_translator,
    save_motion_translator,
)
from trillium.avatar.core.visemes import MOTION_CHANNELS


def random_model(seed: int = 0, **overrides) -> MotionTranslator:
    """A model with random (non-zero) temporal, FiLM and embedding weights so every path matters."""
    torch.manual_seed(seed)
    model = MotionTranslator(MotionTranslatorConfig(num_speakers=3, hidden=32, content_dim=16, **overrides))
    with torch.no_grad():
        torch.nn.init.normal_(model.temporal.weight, std=0.3)
        torch.nn.init.normal_(model.decoder.speaker_embedding.weight, std=1.0)
    return model.eval()


def speech_like(num_samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16_000
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t)
    return (
        envelope * (torch.sin(2 * torch.pi * 180 * t) + 0.3 * torch.randn(num_samples, generator=g))
    ) * 0.2


def test_shapes_and_value_ranges() -> None:
    model = random_model()
    windows = torch.randn(2, 7, 16, 80)
    with torch.no_grad():
        motion, content = model(windows, torch.tensor([0, 2]))
    assert motion.shape == (2, 7, len(MOTION_CHANNELS)) and content.shape == (2, 7, 16)
    assert float(motion[..., :-1].min()) >= 0.0 and float(motion[..., :-1].max()) <= 1.0
    prediction = model.predict(speech_like(8_000, 0), 16_000, speaker_id=1)
    assert prediction.shape == (num_video_frames(8_000), len(MOTION_CHANNELS))


def test_predict_resamples_other_rates() -> None:
    model = random_model()
    prediction = model.predict(speech_like(22_050, 1), 22_050, speaker_id=0)
    assert prediction.shape == (25, len(MOTION_CHANNELS))


def test_speaker_embedding_changes_the_output_but_not_the_content() -> None:
    model = random_model()
    windows = torch.randn(1, 5, 16, 80)
    with torch.no_grad():
        a, content_a = model(windows, torch.tensor([0]))
        b, content_b = model(windows, torch.tensor([1]))
    assert torch.equal(content_a, content_b)
    assert float((a - b).abs().max()) > 1e-3


def test_gain_change_does_not_change_the_content_code() -> None:
    model = random_model()
    windows = torch.randn(4, 16, 80)
    louder = windows + 2.0  # +2 nats in log-mel = a gain change
    assert torch.allclose(model.encode(windows), model.encode(louder), atol=1e-5)


def test_gradient_reversal_flips_and_scales_gradients() -> None:
    x = torch.ones(3, requires_grad=True)
    (gradient_reversal(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_temporal_smoothing_mixes_only_neighbouring_frames() -> None:
    model = random_model(smoothing_radius=2)
    content = torch.zeros(1, 9, 16)
    content[0, 4] = 1.0
    with torch.no_grad():
        mixed = model.smooth(content)
    assert torch.all(mixed[0, [0, 1, 7, 8]] == 0)
    assert float(mixed[0, 2:7].abs().sum()) > 0


@pytest.mark.parametrize("num_samples,seed", [(16_000 + 123, 0), (3_200, 1), (500, 2)])
def test_streaming_equals_offline(num_samples: int, seed: int) -> None:
    model = random_model(seed)
    pcm = speech_like(num_samples, seed)
    offline = model.predict(pcm, 16_000, speaker_id=2)
    stream = StreamingMotion(model, speaker_id=2)
    g = torch.Generator().manual_seed(seed)
    outputs, start = [], 0
    while start < num_samples:
        size = int(torch.randint(1, 1_700, (1,), generator=g))
        outputs.append(stream.push(pcm[start : start + size]))
        start += size
    outputs.append(stream.flush())
    streamed = torch.cat(outputs)
    assert streamed.shape == offline.shape
    assert torch.allclose(streamed, offline, atol=1e-5)


def test_streaming_emits_frames_after_the_stated_look_ahead() -> None:
    model = random_model(smoothing_radius=2)
    stream = StreamingMotion(model, speaker_id=0)
    # frame 0 needs features up to frame 2 (r = 2): 2 * 640 + 2560 samples
    assert stream.push(torch.zeros(3839)).shape[0] == 0
    assert stream.push(torch.zeros(1)).shape[0] == 1


def test_bad_speaker_and_window_shapes_raise() -> None:
    model = random_model()
    with pytest.raises(ValueError, match="speaker_ids"):
        model(torch.randn(1, 2, 16, 80), torch.tensor([3]))
    with pytest.raises(ValueError, match="windows"):
        model(torch.randn(1, 2, 8, 80), torch.tensor([0]))
    with pytest.raises(ValueError, match="speaker_ids"):
        StreamingMotion(model, speaker_id=-1)
    with pytest.raises(ValueError, match="hidden"):
        MotionTranslatorConfig(hidden=0)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = random_model()
    with torch.no_grad():
        model.encoder.input_mean.fill_(0.5)
    save_motion_translator(model, tmp_path / "m.safetensors", extra={"speakers": ["a", "b", "c"]})
    loaded = load_motion_translator(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    pcm = speech_like(4_000, 3)
    assert torch.equal(loaded.predict(pcm, 16_000, 1), model.predict(pcm, 16_000, 1))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="trillium-motion-translator"):
        load_motion_translator(tmp_path / "other.safetensors")
