"""espeak-ng synthesis with phoneme timings, sentence generation and the dataset cache."""

from __future__ import annotations

import numpy as np
import pytest

from trillium.avatar.core.audio import num_video_frames
from trillium.avatar.core.speech_data import (
    SpeakerVoice,
    build_dataset,
    espeak_available,
    generate_sentences,
    heldout_voices,
    read_wav,
    sentence_split,
    synthesize_utterance,
    training_speakers,
    write_wav,
)
from trillium.avatar.core.visemes import MOTION_CHANNELS

needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="libespeak-ng.so.1 missing: apt-get install -y espeak-ng"
)


def test_sentences_are_deterministic_and_the_heldout_split_is_disjoint() -> None:
    assert generate_sentences(5, seed=3) == generate_sentences(5, seed=3)
    assert generate_sentences(5, seed=3) != generate_sentences(5, seed=4)
    train, heldout = sentence_split(30, 8, seed=0)
    assert len(train) == 30 and len(heldout) == 8 and not set(train) & set(heldout)
    assert len(set(train)) == 30


def test_speakers_are_distinct_and_heldout_voices_are_new() -> None:
    speakers = training_speakers()
    assert [s.speaker_id for s in speakers] == list(range(len(speakers)))
    train_voices = {(s.espeak_name, s.rate, s.pitch) for s in speakers}
    assert all((v.espeak_name, v.rate, v.pitch) not in train_voices for v in heldout_voices())
    with pytest.raises(ValueError, match="rate"):
        SpeakerVoice("bad", 0, rate=20)


def test_wav_round_trip(tmp_path) -> None:
    pcm = (np.arange(1000) % 200 - 100).astype(np.int16)
    write_wav(tmp_path / "a.wav", pcm)
    loaded, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16_000 and np.array_equal(loaded, pcm)
    with pytest.raises(ValueError, match="pcm"):
        write_wav(tmp_path / "b.wav", pcm.astype(np.float32))


@needs_espeak
def test_phoneme_events_are_present_monotonic_and_inside_the_audio() -> None:
    utterance = synthesize_utterance("hello world, the quick brown fox.", training_speakers()[0])
    duration = utterance.pcm.shape[0] / 16_000
    times = [e.time_s for e in utterance.events]
    phonemes = [e.phoneme for e in utterance.events]
    assert len(utterance.events) >= 15
    assert all(b >= a for a, b in zip(times, times[1:]))
    assert 0.0 <= times[0] < 0.2 and times[-1] <= duration + 0.05
    assert {"h", "l", "oU", "w", "k", "b", "f"} <= set(phonemes)
    assert utterance.pcm.dtype == np.int16 and np.abs(utterance.pcm).max() > 1000
    assert utterance.targets.shape == (num_video_frames(utterance.pcm.shape[0]), len(MOTION_CHANNELS))


@needs_espeak
def test_a_slower_voice_speaks_longer_and_events_restart_per_utterance() -> None:
    fast = SpeakerVoice("fast", 0, rate=260)
    slow = SpeakerVoice("slow", 0, rate=110)
    text = "the purple monkey follows the golden rocket."
    a, b = synthesize_utterance(text, fast), synthesize_utterance(text, slow)
    assert b.pcm.shape[0] > 1.5 * a.pcm.shape[0]
    assert b.events[0].time_s < 0.2  # positions restart at each utterance
    assert [e.phoneme for e in a.events if e.phoneme[0] != "_"] == [
        e.phoneme for e in b.events if e.phoneme[0] != "_"
    ]


@needs_espeak
def test_lip_closure_targets_follow_the_bilabials() -> None:
    utterance = synthesize_utterance("mama bought a map.", training_speakers()[0])
    close = utterance.targets[:, MOTION_CHANNELS.index("mouthClose")]
    for event in utterance.events:
        if event.phoneme in ("m", "b", "p"):
            frame = min(round(event.time_s * 25) + 1, close.shape[0] - 1)
            assert close[frame - 1 : frame + 2].max() > 0.4, event


@needs_espeak
def test_dataset_cache_round_trip(tmp_path) -> None:
    voices = training_speakers()[:2]
    sentences = ["yes, the tiny doctor moves.", "the cat opens the window."]
    first = build_dataset(sentences, voices, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second = build_dataset(sentences, voices, tmp_path, progress=False)
    assert len(first) == len(second) == 4
    for a, b in zip(first, second):
        assert a.text == b.text and a.voice == b.voice
        assert np.array_equal(a.pcm, b.pcm) and np.array_equal(a.targets, b.targets)
        assert a.events == b.events
