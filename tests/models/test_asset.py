"""The shipped av-tiny asset (skipped until it has been trained) loads offline and answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from trillium.models.av_tiny import evaluate, load_av_tiny
from trillium.models.avqa import heldout_samples

ASSET = Path(__file__).resolve().parents[2] / "assets" / "models" / "av-tiny"


@pytest.mark.skipif(not (ASSET / "model.safetensors").is_file(), reason="av-tiny asset not trained yet")
def test_shipped_asset_answers_heldout_samples() -> None:
    model, processor = load_av_tiny(ASSET)
    result = evaluate(model, processor, heldout_samples(4, n_frames=(7,)), progress=False)
    assert result.accuracy["overall"] >= 0.8, result.accuracy
    assert (ASSET / "MODEL_CARD.md").is_file()
