"""The shipped av-tiny asset (skipped until trained) loads offline and answers as its card records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trillium.models.av_tiny import evaluate, load_av_tiny
from trillium.models.avqa import heldout_samples

ASSET = Path(__file__).resolve().parents[2] / "assets" / "models" / "av-tiny"


@pytest.mark.skipif(not (ASSET / "model.safetensors").is_file(), reason="av-tiny asset not trained yet")
def test_shipped_asset_answers_heldout_samples_as_recorded() -> None:
    recorded = json.loads((ASSET / "eval_results.json").read_text())["heldout_full_cache"]["overall"]
    model, processor = load_av_tiny(ASSET)
    result = evaluate(model, processor, heldout_samples(8, n_frames=(7,)), progress=False)
    # 40 questions: allow sampling noise around the recorded accuracy, but far above chance.
    assert result.accuracy["overall"] >= max(0.3, recorded - 0.2), (result.accuracy, recorded)
    assert (ASSET / "MODEL_CARD.md").is_file()
