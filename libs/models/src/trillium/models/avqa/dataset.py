"""Samples and splits of AVQA-synth.

A :class:`Sample` is what a user would send: RGB frames, PCM audio with its sample rate, a text
passage, and questions (each with its family and expected answer), plus the scene that produced it.
Training and held-out splits use disjoint seed ranges and different knob values (held-out clips
have frame counts, distractor and event counts never seen in training).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from trillium.models.avqa.questions import FAMILIES, Question, draw_question
from trillium.models.avqa.render import render_audio, render_video
from trillium.models.avqa.scene import MAX_TIMESTAMP, AVQAConfig, Scene, generate_scene

TRAIN_SEED_OFFSET = 0
TRAIN_SEED_STRIDE = 100_000_007
"""Sample seeds of training stream ``seed`` start at ``TRAIN_SEED_OFFSET + seed * TRAIN_SEED_STRIDE``."""
TRAIN_SEED_SPAN = 10_000_000
"""Sample seeds one training stream may use (a 3,000-step run uses about 50,000)."""
HELDOUT_SEED_OFFSET = 1_000_000_000
HELDOUT_SEED_SPAN = 100_000_000
VALIDATION_SEED_OFFSET = HELDOUT_SEED_OFFSET + 60_000_000
"""Validation samples: held-out knobs, seeds far from the held-out ones (inside the span training avoids)."""
TRAIN_FRAMES: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16)
TRAIN_FRAME_SIZES: tuple[int, ...] = (24, 32, 40)
TRAIN_DISTRACTORS: tuple[int, ...] = (0, 1, 2, 4)
HELDOUT_FRAMES: tuple[int, ...] = (7, 11, 15)
LONG_TRAIN_FRAMES: tuple[int, ...] = (18, 22, 26, 30, 34, 38, 42)
LONG_TRAIN_FRAME_SIZES: tuple[int, ...] = (32, 40, 48, 56, 64, 72, 80)


@dataclass(frozen=True)
class Sample:
    """One AVQA-synth sample.

    Attributes:
        scene: the ground truth the media were rendered from.
        frames: ``uint8`` RGB video ``[T, H, W, 3]``.
        audio: ``float32`` PCM ``[T * step_samples]``.
        sample_rate: audio sample rate in Hz.
        text: the text passage (the facts).
        questions: questions about this sample.
    """

    scene: Scene
    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    text: str
    questions: tuple[Question, ...]


def facts_text(scene: Scene) -> str:
    """Text passage listing the scene's facts as key-value pairs, e.g. ``"code delta . pet kilo ."``."""
    return " ".join(f"{fact.key} {fact.value} ." for fact in scene.facts)


def make_sample(config: AVQAConfig, seed: int, families: tuple[str, ...] = FAMILIES) -> Sample:
    """Render the scene of ``(config, seed)`` and draw one question per entry of ``families``."""
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"families must hold names from {FAMILIES}, got {family!r}")
    scene = generate_scene(config, seed)
    rng = np.random.default_rng([seed, 0x9E5])
    questions = tuple(draw_question(scene, family, rng) for family in families)
    return Sample(
        scene, render_video(scene), render_audio(scene), config.sample_rate, facts_text(scene), questions
    )


def training_config(rng: np.random.Generator, difficulty: float = 1.0) -> AVQAConfig:
    """Knob values of one training sample (frames, size, events, distractors, facts drawn at random).

    ``difficulty`` in ``[0, 1]`` caps the frame count and frame size (curriculum: short, small
    clips first); 1 draws from every training value.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
    max_frames = TRAIN_FRAMES[0] + difficulty * (TRAIN_FRAMES[-1] - TRAIN_FRAMES[0])
    max_size = TRAIN_FRAME_SIZES[0] + difficulty * (TRAIN_FRAME_SIZES[-1] - TRAIN_FRAME_SIZES[0])
    n_frames = int(rng.choice([f for f in TRAIN_FRAMES if f <= max_frames]))
    events = int(rng.integers(1, min(n_frames, 6) + 1))
    return AVQAConfig(
        n_frames=n_frames,
        frame_size=int(rng.choice([s for s in TRAIN_FRAME_SIZES if s <= max_size])),
        n_sound_events=min(events, n_frames),
        n_distractors=int(rng.choice(TRAIN_DISTRACTORS)),
        n_facts=int(rng.integers(1, 6)),
        max_first_step=MAX_TIMESTAMP - n_frames,
    )


def long_training_config(rng: np.random.Generator) -> AVQAConfig:
    """Knob values of one long training clip: 18-42 frames of 32-80 px (about 0.4-4.4k av-tiny prompt
    tokens), more sound events. Frame counts stay disjoint from the held-out ones and stop below the
    longest evaluation clips (48 and 60 frames), so those still measure generalisation to unseen
    lengths; frames larger than 40 px never occur in short training clips."""
    n_frames = int(rng.choice(LONG_TRAIN_FRAMES))
    return AVQAConfig(
        n_frames=n_frames,
        frame_size=int(rng.choice(LONG_TRAIN_FRAME_SIZES)),
        n_sound_events=int(rng.integers(2, 9)),
        n_distractors=int(rng.choice(TRAIN_DISTRACTORS)),
        n_facts=int(rng.integers(1, 6)),
        max_first_step=MAX_TIMESTAMP - n_frames,
    )


@dataclass(frozen=True)
class LongClips:
    """Long clips mixed into training from batch ``after`` on: each batch is long with probability
    ``fraction`` and then holds as many clips as fit ``batch_volume`` (frames x height x width of
    video, at least one clip), so that a long batch costs about as much as a short one whatever
    the clip's length and frame size. The default, 30 x 40 x 40 x 4, gives four 30-frame 40 px
    clips, ten 18-frame 32 px ones, or one 42-frame clip of 64 px or more."""

    after: int
    fraction: float = 0.5
    batch_volume: int = 192_000

    def __post_init__(self) -> None:
        if self.after < 0 or not 0.0 <= self.fraction <= 1.0 or self.batch_volume < 1:
            raise ValueError(
                f"LongClips needs after >= 0, fraction in [0, 1] and batch_volume >= 1, got {self}"
            )

    def clips_per_batch(self, config: AVQAConfig) -> int:
        """Clips of knob values ``config`` in one long batch."""
        return max(1, round(self.batch_volume / (config.n_frames * config.frame_size**2)))


def training_batches(
    seed: int,
    questions_per_sample: int = 8,
    batch_size: int = 8,
    *,
    curriculum_batches: int = 0,
    first_batch: int = 0,
    family_weights: tuple[float, ...] | None = None,
    long_clips: LongClips | None = None,
) -> Iterator[list[Sample]]:
    """Endless stream of training batches; the clips of one batch share their knob values (so they
    have nearly equal prompt lengths) and each clip gets ``questions_per_sample`` random questions.

    During the first ``curriculum_batches`` batches the difficulty grows linearly from 0 to 1
    (``first_batch`` is the index of the first yielded batch, for resumed runs). Question families
    are drawn with probabilities proportional to ``family_weights`` (one per entry of ``FAMILIES``;
    uniform if None). ``long_clips`` mixes in batches of long clips (:func:`long_training_config`)
    once the short-clip skills are learned.
    """
    if family_weights is not None and (
        len(family_weights) != len(FAMILIES) or min(family_weights) < 0 or sum(family_weights) <= 0
    ):
        raise ValueError(
            f"family_weights must hold {len(FAMILIES)} non-negative weights, not all zero, "
            f"got {family_weights}"
        )
    first_seed = TRAIN_SEED_OFFSET + seed * TRAIN_SEED_STRIDE
    if (
        first_seed < HELDOUT_SEED_OFFSET + HELDOUT_SEED_SPAN
        and first_seed + TRAIN_SEED_SPAN > HELDOUT_SEED_OFFSET
    ):
        raise ValueError(f"seed {seed} would draw training samples from the held-out seed range; use another")
    probabilities = None if family_weights is None else np.asarray(family_weights) / sum(family_weights)
    rng = np.random.default_rng([seed, TRAIN_SEED_OFFSET])
    index = 0
    batch_number = first_batch
    while True:
        difficulty = min(1.0, batch_number / curriculum_batches) if curriculum_batches > 0 else 1.0
        is_long = (
            long_clips is not None and batch_number >= long_clips.after and rng.random() < long_clips.fraction
        )
        batch_number += 1
        config = long_training_config(rng) if is_long else training_config(rng, difficulty)
        batch = []
        for _ in range(long_clips.clips_per_batch(config) if is_long else batch_size):
            drawn = (
                rng.integers(0, len(FAMILIES), size=questions_per_sample)
                if probabilities is None
                else rng.choice(len(FAMILIES), size=questions_per_sample, p=probabilities)
            )
            families = tuple(FAMILIES[int(i)] for i in drawn)
            batch.append(make_sample(config, first_seed + index, families))
            index += 1
        yield batch


def heldout_config(n_frames: int, frame_size: int = 40) -> AVQAConfig:
    """Held-out knob values: a given frame count, 3 distractors, 5 events (clipped), 4 facts."""
    return AVQAConfig(
        n_frames=n_frames,
        frame_size=frame_size,
        n_sound_events=min(5, n_frames),
        n_distractors=3,
        n_facts=4,
        max_first_step=max(0, min(MAX_TIMESTAMP - n_frames, 20)),
    )


def heldout_samples(
    count: int, n_frames: tuple[int, ...] = HELDOUT_FRAMES, frame_size: int = 40
) -> list[Sample]:
    """``count`` held-out samples per question family (one question each), cycling over ``n_frames``."""
    return _knob_split(HELDOUT_SEED_OFFSET, count, n_frames, frame_size)


def validation_samples(
    count: int, n_frames: tuple[int, ...] = HELDOUT_FRAMES, frame_size: int = 40
) -> list[Sample]:
    """Like :func:`heldout_samples` (same knobs) with other seeds: recipe choices are made on this
    split, so that the held-out split is only ever reported."""
    return _knob_split(VALIDATION_SEED_OFFSET, count, n_frames, frame_size)


def _knob_split(first_seed: int, count: int, n_frames: tuple[int, ...], frame_size: int) -> list[Sample]:
    samples = []
    for index in range(count * len(FAMILIES)):
        family = FAMILIES[index % len(FAMILIES)]
        config = heldout_config(n_frames[(index // len(FAMILIES)) % len(n_frames)], frame_size)
        samples.append(make_sample(config, first_seed + index, (family,)))
    return samples
