"""Phoneme -> viseme -> ARKit coefficient mapping and coarticulation."""

from __future__ import annotations

import pytest
import torch

from trillium.avatar.core.visemes import (
    MOTION_CHANNELS,
    MOUTH_COEFFICIENTS,
    VISEMES,
    ArticulationStyle,
    PhonemeEvent,
    coefficient_track,
    motion_track,
    viseme_of,
    viseme_target,
)

IDX = {name: i for i, name in enumerate(MOUTH_COEFFICIENTS)}


def held(phoneme: str, style: ArticulationStyle | None = None) -> torch.Tensor:
    """Coefficients in the middle of a 0.4 s phoneme between silences."""
    events = [PhonemeEvent(0.2, phoneme), PhonemeEvent(0.6, "_")]
    return coefficient_track(events, 25, style)[10]


@pytest.mark.parametrize("phoneme", ["p", "b", "m"])
def test_bilabials_close_the_mouth(phoneme: str) -> None:
    assert viseme_of(phoneme) == "PP"
    c = held(phoneme)
    assert float(c[IDX["mouthClose"]]) > 0.8
    assert float(c[IDX["jawOpen"]]) < 0.1


def test_rounded_vowel_puckers_and_open_vowel_opens_the_jaw() -> None:
    ou, aa, ee = held("oU"), held("aa"), held("i:")
    assert float(ou[IDX["mouthFunnel"]]) > 0.5 and float(ou[IDX["mouthPucker"]]) > 0.2
    assert float(held("u:")[IDX["mouthPucker"]]) > 0.7
    assert float(aa[IDX["jawOpen"]]) > 0.6 > float(ou[IDX["jawOpen"]])
    assert float(ee[IDX["mouthSmileLeft"]]) > 0.3 and float(aa[IDX["mouthPucker"]]) == 0.0


def test_fallbacks_for_marked_and_unknown_mnemonics() -> None:
    assert viseme_of("@2") == "ih" and viseme_of("a#") == "aa" and viseme_of("_!") == "sil"
    assert viseme_of("p2") == "PP"  # digit stripped
    assert viseme_of("z/2") == "SS"  # first letter
    assert all(v in VISEMES for v in map(viseme_of, ["Q", "@@", "*", "k"]))
    with pytest.raises(ValueError, match="phoneme"):
        viseme_of("")
    with pytest.raises(ValueError, match="viseme"):
        viseme_target("XX")


def test_silence_is_neutral_and_ramps_are_gradual() -> None:
    events = [PhonemeEvent(0.4, "aa"), PhonemeEvent(0.8, "_")]
    track = coefficient_track(events, 40)
    jaw = track[:, IDX["jawOpen"]]
    assert float(track[:5].abs().max()) == 0.0  # before the attack ramp
    assert float(jaw[13]) == pytest.approx(0.7, abs=1e-5)  # target once silence has released (80 ms)
    assert 0.0 < float(jaw[9]) < float(jaw[10]) < float(jaw[11]) < 0.7  # attack overlaps the release
    assert float(jaw[30:].abs().max()) == 0.0
    assert float(jaw.diff().abs().max()) < 0.5  # no jumps from 0 to full open


def test_fast_bilabial_between_vowels_still_mostly_closes() -> None:
    events = [
        PhonemeEvent(0.2, "aa"),
        PhonemeEvent(0.4, "m"),
        PhonemeEvent(0.48, "aa"),
        PhonemeEvent(0.7, "_"),
    ]
    track = coefficient_track(events, 25)
    assert float(track[11, IDX["mouthClose"]]) > 0.5
    assert float(track[11, IDX["jawOpen"]]) < float(track[7, IDX["jawOpen"]])


def test_style_scales_jaw_and_motion_track_adds_jaw_pitch() -> None:
    events = [PhonemeEvent(0.2, "aa"), PhonemeEvent(0.6, "_")]
    style = ArticulationStyle(jaw_gain=1.3, smile_bias=0.1, jaw_angle_rad=0.25)
    neutral, styled = coefficient_track(events, 25), coefficient_track(events, 25, style)
    assert float(styled[10, IDX["jawOpen"]]) == pytest.approx(
        min(1.0, 1.3 * float(neutral[10, IDX["jawOpen"]]))
    )
    assert float(styled[0, IDX["mouthSmileRight"]]) == pytest.approx(0.1)
    motion = motion_track(events, 25, style)
    assert motion.shape == (25, len(MOTION_CHANNELS))
    assert torch.allclose(motion[:, -1], 0.25 * styled[:, IDX["jawOpen"]])
    with pytest.raises(ValueError, match="jaw_gain"):
        ArticulationStyle(jaw_gain=0.0)


def test_events_must_be_sorted() -> None:
    with pytest.raises(ValueError, match="sorted"):
        coefficient_track([PhonemeEvent(0.5, "a"), PhonemeEvent(0.1, "b")], 10)
