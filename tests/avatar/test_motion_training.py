"""End to end: ``train_motion --quick`` on espeak-ng speech beats a constant-mean baseline (held out)."""

from __future__ import annotations

import json

import pytest
import torch

from trillium.avatar.core.motion import load_motion_translator
from trillium.avatar.core.speech_data import espeak_available, synthesize_utterance, training_speakers
from trillium.avatar.core.train_motion import (
    WEIGHTS_NAME,
    TrainConfig,
    main,
    reversal_schedule,
    speaker_probe_accuracy,
)
from trillium.avatar.core.visemes import MOTION_CHANNELS


def test_speaker_probe_reads_separable_speakers_and_not_noise() -> None:
    g = torch.Generator().manual_seed(0)
    speakers = torch.arange(200) % 2
    separable = torch.randn(200, 4, generator=g) + 4.0 * speakers[:, None]
    noise = torch.randn(200, 4, generator=g)
    assert speaker_probe_accuracy(separable[:100], speakers[:100], separable[100:], speakers[100:]) > 0.95
    assert speaker_probe_accuracy(noise[:100], speakers[:100], noise[100:], speakers[100:]) < 0.75


def test_reversal_ramps_from_zero_to_its_maximum() -> None:
    values = [reversal_schedule(p / 10, 0.003) for p in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.003, rel=1e-3)
    assert all(b > a for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="progress"):
        reversal_schedule(1.5, 0.003)


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="num_speakers"):
        TrainConfig(num_speakers=0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)


@pytest.mark.skipif(not espeak_available(), reason="libespeak-ng.so.1 missing: apt-get install -y espeak-ng")
def test_quick_training_beats_the_constant_mean_baseline(tmp_path) -> None:
    out = tmp_path / "motion"
    main(["--out", str(out), "--quick", "--cache", str(tmp_path / "cache"), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("heldout_sentences", "heldout_voices"):
        m = metrics[split]
        assert m["mse"] < 0.8 * m["mse_constant_mean_baseline"], (split, m)
        assert m["pearson_mean_mouth"] > 0.3, (split, m)
        assert m["pearson_jawOpen"] > 0.5, (split, m)
        assert m["lip_vertex_error_mm"] > 0.0
    assert (out / WEIGHTS_NAME).stat().st_size < 2_000_000
    assert "Apache-2.0" in (out / "README.md").read_text()

    model = load_motion_translator(out / WEIGHTS_NAME)
    utterance = synthesize_utterance("the happy robot paints a yellow window.", training_speakers()[0])
    motion = model.predict(utterance.pcm, 16_000, speaker_id=0)
    assert motion.shape == utterance.targets.shape
    jaw = MOTION_CHANNELS.index("jawOpen")
    r = torch.corrcoef(torch.stack([motion[:, jaw], torch.from_numpy(utterance.targets[:, jaw])]))[0, 1]
    assert float(r) > 0.5
