"""AVQA-synth generator: determinism, answers recomputed from the scene description, splits."""

from __future__ import annotations

import numpy as np
import pytest

from trillium.models.avqa import (
    COLOURS,
    FAMILIES,
    HELDOUT_FRAMES,
    LONG_TRAIN_FRAMES,
    NUMBER_WORDS,
    TRAIN_FRAMES,
    AVQAConfig,
    LongClips,
    Question,
    Scene,
    generate_scene,
    heldout_samples,
    make_sample,
    render_audio,
    render_video,
    training_batches,
    training_config,
    validation_samples,
)

CONFIG = AVQAConfig(
    n_frames=10, frame_size=32, n_sound_events=4, n_distractors=2, n_facts=3, max_first_step=5
)


def recompute_answer(scene: Scene, question: Question) -> tuple[str, ...]:
    """Independent re-derivation of an answer from the raw scene fields."""
    visible = {}
    for track in scene.tracks:
        for offset in range(len(track.cells)):
            visible[track.start + offset] = (track.colour, f"{track.colour}-{track.shape}")
    heard = {event.step: event.sound for event in scene.sounds}
    if question.family == "video_recall":
        step = int(question.param("timestamp")) - scene.first_step
        return (visible[step][1],) if step in visible else ("nothing",)
    if question.family == "audio_recall":
        return (heard.get(int(question.param("timestamp")) - scene.first_step, "silence"),)
    if question.family == "cross_modal":
        (step,) = [s for s, sound in heard.items() if sound == question.param("sound")]
        return (f"<t{scene.first_step + step}>", visible[step][0] if step in visible else "nothing")
    if question.family == "counting":
        return (NUMBER_WORDS[list(heard.values()).count(question.param("sound"))],)
    return ({f.key: f.value for f in scene.facts}[question.param("key")],)


def test_same_seed_same_sample_and_different_seed_differs() -> None:
    a, b, c = make_sample(CONFIG, 11), make_sample(CONFIG, 11), make_sample(CONFIG, 12)
    assert a.scene == b.scene and a.questions == b.questions and a.text == b.text
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.scene != c.scene
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("seed", range(25))
def test_answers_recomputed_from_scene(seed: int) -> None:
    sample = make_sample(CONFIG, seed, FAMILIES * 2)
    for question in sample.questions:
        assert question.answer == recompute_answer(sample.scene, question), question


def test_questions_end_with_their_subject_and_facts_are_in_text() -> None:
    sample = make_sample(CONFIG, 3)
    by_family = {q.family: q for q in sample.questions}
    stamp = by_family["video_recall"].param("timestamp")
    assert by_family["video_recall"].text.split()[-1] == f"<t{stamp}>"
    assert by_family["audio_recall"].text.split()[-1] == f"<t{by_family['audio_recall'].param('timestamp')}>"
    assert by_family["cross_modal"].text.split()[-1] == by_family["cross_modal"].param("sound")
    assert by_family["counting"].text.split()[-1] == by_family["counting"].param("sound")
    assert by_family["text"].text.split()[-1] == by_family["text"].param("key")
    for fact in sample.scene.facts:
        assert f"{fact.key} {fact.value} ." in sample.text


def test_scene_invariants_one_object_per_frame_and_shapes() -> None:
    for seed in range(20):
        scene = generate_scene(CONFIG, seed)
        steps = [t.start + i for t in scene.tracks for i in range(len(t.cells))]
        assert len(steps) == len(set(steps)) and all(0 <= s < CONFIG.n_frames for s in steps)
        assert len({e.step for e in scene.sounds}) == CONFIG.n_sound_events
        assert 0 <= scene.first_step <= CONFIG.max_first_step
        assert set(scene.noise_steps).isdisjoint(e.step for e in scene.sounds)


def test_rendered_object_has_its_colour_in_its_cell() -> None:
    scene = generate_scene(CONFIG, 4)
    frames = render_video(scene)
    assert frames.shape == (CONFIG.n_frames, 32, 32, 3) and frames.dtype == np.uint8
    track = scene.tracks[0]
    row, col = track.cells[0]
    block = frames[track.start, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8].reshape(-1, 3)
    assert (block == np.array(COLOURS[track.colour], dtype=np.uint8)).all(axis=1).sum() >= 12
    audio = render_audio(scene)
    assert audio.shape == (CONFIG.n_frames * CONFIG.step_samples,) and np.abs(audio).max() <= 1.0
    event = scene.sounds[0]
    loud = np.abs(audio[event.step * 1600 : (event.step + 1) * 1600]).mean()
    quiet_steps = [
        s for s in range(CONFIG.n_frames) if scene.sound_at(s) is None and s not in scene.noise_steps
    ]
    if quiet_steps:
        assert loud > 5 * np.abs(audio[quiet_steps[0] * 1600 : (quiet_steps[0] + 1) * 1600]).mean()


def test_heldout_split_uses_unseen_knobs_and_seeds() -> None:
    assert set(HELDOUT_FRAMES).isdisjoint(TRAIN_FRAMES)
    held = heldout_samples(1)
    assert [s.questions[0].family for s in held] == list(FAMILIES)
    train = next(training_batches(seed=0, questions_per_sample=2, batch_size=3))
    assert {s.scene.config.n_frames for s in held} <= set(HELDOUT_FRAMES)
    assert len({s.scene.config for s in train}) == 1
    assert {s.scene.config.n_frames for s in train} <= set(TRAIN_FRAMES)
    assert all(len(s.questions) == 2 for s in train)


def test_validation_split_has_heldout_knobs_and_other_scenes() -> None:
    held, val = heldout_samples(3), validation_samples(3)
    assert [s.scene.config for s in val] == [s.scene.config for s in held]
    assert [s.questions[0].family for s in val] == [s.questions[0].family for s in held]
    assert all(v.scene != h.scene for v, h in zip(val, held, strict=True))
    assert validation_samples(1, n_frames=(24,))[0].scene.config.n_frames == 24


@pytest.mark.parametrize(
    "kwargs",
    [{"n_frames": 1}, {"frame_size": 30}, {"n_sound_events": 0}, {"n_facts": 0}, {"max_first_step": 60}],
)
def test_bad_config_raises_value_error(kwargs: dict[str, int]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name.split("_")[-1]):
        AVQAConfig(**kwargs)


def test_curriculum_starts_with_short_small_clips() -> None:
    rng = np.random.default_rng(0)
    easy = {training_config(rng, 0.0) for _ in range(20)}
    assert {(c.n_frames, c.frame_size) for c in easy} == {(TRAIN_FRAMES[0], 24)}
    full = {training_config(rng, 1.0).n_frames for _ in range(200)}
    assert full == set(TRAIN_FRAMES)
    stream = training_batches(seed=1, questions_per_sample=1, batch_size=1, curriculum_batches=10)
    assert next(stream)[0].scene.config.n_frames == TRAIN_FRAMES[0]
    with pytest.raises(ValueError, match="difficulty"):
        training_config(rng, 1.5)


def test_family_weights_steer_the_questions_drawn() -> None:
    only_text = next(
        training_batches(seed=2, questions_per_sample=6, batch_size=2, family_weights=(0, 0, 0, 0, 1))
    )
    assert {q.family for s in only_text for q in s.questions} == {"text"}
    mostly_audio = next(
        training_batches(seed=2, questions_per_sample=40, batch_size=1, family_weights=(1, 20, 1, 1, 1))
    )
    families = [q.family for q in mostly_audio[0].questions]
    assert families.count("audio_recall") > len(families) / 2
    for bad in ((1, 1), (0, 0, 0, 0, 0), (1, -1, 1, 1, 1)):
        with pytest.raises(ValueError, match="family_weights"):
            next(training_batches(seed=0, family_weights=bad))


def test_long_clips_join_after_their_start_batch_sized_by_video_volume() -> None:
    assert set(LONG_TRAIN_FRAMES).isdisjoint(HELDOUT_FRAMES) and max(LONG_TRAIN_FRAMES) < 48
    volume = 18 * 32 * 32 * 2  # two of the smallest long clips
    stream = training_batches(
        seed=3,
        questions_per_sample=1,
        batch_size=3,
        long_clips=LongClips(after=2, fraction=1.0, batch_volume=volume),
    )
    batches = [next(stream) for _ in range(12)]
    assert [len(b) for b in batches[:2]] == [3, 3]
    assert all(s.scene.config.n_frames in TRAIN_FRAMES for b in batches[:2] for s in b)
    assert all(s.scene.config.n_frames in LONG_TRAIN_FRAMES for b in batches[2:] for s in b)
    for batch in batches[2:]:
        config = batch[0].scene.config
        assert all(s.scene.config == config for s in batch)
        assert len(batch) == max(1, round(volume / (config.n_frames * config.frame_size**2)))
    assert {len(b) for b in batches[2:]} >= {1, 2}  # the clip's volume sets the batch size
    half = training_batches(
        seed=4,
        questions_per_sample=1,
        batch_size=3,
        long_clips=LongClips(after=0, fraction=0.5, batch_volume=1),
    )
    sizes = [len(next(half)) for _ in range(40)]
    assert 8 < sizes.count(1) < 32
    for bad in ({"after": -1}, {"after": 0, "fraction": 1.5}, {"after": 0, "batch_volume": 0}):
        with pytest.raises(ValueError, match="LongClips"):
            LongClips(**bad)


def test_no_long_clips_leaves_the_stream_unchanged() -> None:
    plain = training_batches(seed=5, questions_per_sample=2, batch_size=2)
    late = training_batches(
        seed=5, questions_per_sample=2, batch_size=2, long_clips=LongClips(after=10, fraction=1.0)
    )
    for _ in range(3):
        assert [s.questions for s in next(plain)] == [s.questions for s in next(late)]


def test_training_seeds_never_reach_the_heldout_seed_range() -> None:
    for seed in (0, 9, 11):
        next(training_batches(seed=seed, questions_per_sample=1, batch_size=1))
    with pytest.raises(ValueError, match="held-out seed range"):
        next(training_batches(seed=10, questions_per_sample=1, batch_size=1))
