"""Scene descriptions of AVQA-synth and their seeded generator.

A scene is the complete, renderable ground truth of one sample: coloured objects that appear, move
on a grid of cells and disappear (at most one coloured object is visible per frame, so "the object
at time t" is unambiguous), static grey distractor shapes, sound events (one per time step at most),
distractor noise bursts, and a few text facts. Video frames and audio steps share one clock: step
``k`` is video frame ``k`` and audio samples ``[k * step_samples, (k + 1) * step_samples)``.
Timestamps shown to the model are ``first_step + k`` (a clip cut from a longer stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (235, 225, 40),
    "cyan": (40, 220, 225),
    "magenta": (220, 50, 220),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
SOUNDS: tuple[str, ...] = ("bell", "horn", "whistle", "bird", "drum", "buzz")
FACT_KEYS: tuple[str, ...] = ("code", "name", "city", "pet", "door", "song", "boat", "key")
FACT_VALUES: tuple[str, ...] = (
    "alpha", "bravo", "delta", "echo", "golf", "hotel", "india", "kilo",
    "lima", "mike", "oscar", "papa", "romeo", "sierra", "tango", "victor",
)  # fmt: skip
MAX_TIMESTAMP = 64


@dataclass(frozen=True)
class AVQAConfig:
    """Difficulty knobs of one split.

    Attributes:
        n_frames: video frames = time steps of the clip.
        frame_size: frame height = width in pixels (a multiple of ``cell``).
        cell: side of one grid cell in pixels (one object fits one cell).
        n_sound_events: sound events in the clip (at distinct steps, ``<= n_frames``).
        n_distractors: static grey shapes in the video plus noise bursts in the audio.
        n_facts: key/value facts in the text part of the prompt.
        sample_rate: audio sample rate in Hz.
        step_samples: audio samples per time step (one video frame).
        max_first_step: the clip's first timestamp is drawn from ``[0, max_first_step]``.
    """

    n_frames: int = 12
    frame_size: int = 32
    cell: int = 8
    n_sound_events: int = 4
    n_distractors: int = 2
    n_facts: int = 3
    sample_rate: int = 8000
    step_samples: int = 1600
    max_first_step: int = 0

    def __post_init__(self) -> None:
        if self.n_frames < 2:
            raise ValueError(f"n_frames must be >= 2, got {self.n_frames}")
        if self.cell < 4 or self.frame_size < self.cell or self.frame_size % self.cell:
            raise ValueError(
                f"frame_size must be a positive multiple of cell={self.cell}, got {self.frame_size}"
            )
        if not 1 <= self.n_sound_events <= self.n_frames:
            raise ValueError(f"n_sound_events must lie in [1, n_frames], got {self.n_sound_events}")
        if self.n_distractors < 0:
            raise ValueError(f"n_distractors must be >= 0, got {self.n_distractors}")
        if not 1 <= self.n_facts <= len(FACT_KEYS):
            raise ValueError(f"n_facts must lie in [1, {len(FACT_KEYS)}], got {self.n_facts}")
        if self.max_first_step < 0 or self.max_first_step + self.n_frames > MAX_TIMESTAMP:
            raise ValueError(
                f"max_first_step + n_frames must be <= {MAX_TIMESTAMP}, "
                f"got {self.max_first_step} + {self.n_frames}"
            )

    @property
    def grid(self) -> int:
        """Cells per side."""
        return self.frame_size // self.cell


@dataclass(frozen=True)
class ObjectTrack:
    """One appearance of a coloured object: visible from step ``start`` for ``len(cells)`` steps."""

    colour: str
    shape: str
    start: int
    cells: tuple[tuple[int, int], ...]

    @property
    def end(self) -> int:
        """First step at which the object is gone."""
        return self.start + len(self.cells)


@dataclass(frozen=True)
class SoundEvent:
    """A sound of class ``sound`` filling time step ``step``."""

    sound: str
    step: int


@dataclass(frozen=True)
class Fact:
    """A text fact "the ``key`` is ``value``"."""

    key: str
    value: str


@dataclass(frozen=True)
class Scene:
    """Complete ground truth of one AVQA-synth sample (everything needed to render and answer)."""

    config: AVQAConfig
    first_step: int
    tracks: tuple[ObjectTrack, ...]
    sounds: tuple[SoundEvent, ...]
    grey_cells: tuple[tuple[int, int], ...]
    grey_shapes: tuple[str, ...]
    noise_steps: tuple[int, ...]
    facts: tuple[Fact, ...]
    render_seed: int

    def object_at(self, step: int) -> ObjectTrack | None:
        """The coloured object visible at clip step ``step`` (0-based), if any."""
        for track in self.tracks:
            if track.start <= step < track.end:
                return track
        return None

    def sound_at(self, step: int) -> str | None:
        """The sound class playing at clip step ``step``, if any."""
        for event in self.sounds:
            if event.step == step:
                return event.sound
        return None


def _random_walk(rng: np.random.Generator, grid: int, length: int) -> tuple[tuple[int, int], ...]:
    row, col = (int(v) for v in rng.integers(0, grid, size=2))
    cells = [(row, col)]
    for _ in range(length - 1):
        d_row, d_col = ((0, 1), (0, -1), (1, 0), (-1, 0), (0, 0))[int(rng.integers(0, 5))]
        row, col = min(max(row + d_row, 0), grid - 1), min(max(col + d_col, 0), grid - 1)
        cells.append((row, col))
    return tuple(cells)


def _tracks(rng: np.random.Generator, config: AVQAConfig) -> tuple[ObjectTrack, ...]:
    tracks: list[ObjectTrack] = []
    step = int(rng.integers(0, 2))
    previous_colour = None
    while step < config.n_frames:
        length = min(int(rng.integers(2, 5)), config.n_frames - step)
        colours = [c for c in COLOURS if c != previous_colour]
        colour = colours[int(rng.integers(0, len(colours)))]
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        tracks.append(ObjectTrack(colour, shape, step, _random_walk(rng, config.grid, length)))
        previous_colour = colour
        step += length + int(rng.integers(0, 3))
    return tuple(tracks)


def generate_scene(config: AVQAConfig, seed: int) -> Scene:
    """Draw one scene; the same ``(config, seed)`` always gives the same scene."""
    rng = np.random.default_rng([seed, 0xA7C])
    sound_steps = np.sort(rng.choice(config.n_frames, size=config.n_sound_events, replace=False))
    sounds = tuple(SoundEvent(SOUNDS[int(rng.integers(0, len(SOUNDS)))], int(s)) for s in sound_steps)
    free_steps = [s for s in range(config.n_frames) if s not in set(sound_steps.tolist())]
    n_noise = min(config.n_distractors, len(free_steps))
    noise_steps = tuple(sorted(int(s) for s in rng.choice(free_steps, size=n_noise, replace=False)))
    n_grey = min(config.n_distractors, config.grid * config.grid)
    grey_flat = rng.choice(config.grid * config.grid, size=n_grey, replace=False)
    grey_cells = tuple((int(f) // config.grid, int(f) % config.grid) for f in grey_flat)
    grey_shapes = tuple(SHAPES[int(rng.integers(0, len(SHAPES)))] for _ in grey_cells)
    keys = rng.choice(len(FACT_KEYS), size=config.n_facts, replace=False)
    facts = tuple(Fact(FACT_KEYS[int(k)], FACT_VALUES[int(rng.integers(0, len(FACT_VALUES)))]) for k in keys)
    return Scene(
        config=config,
        first_step=int(rng.integers(0, config.max_first_step + 1)),
        tracks=_tracks(rng, config),
        sounds=sounds,
        grey_cells=grey_cells,
        grey_shapes=grey_shapes,
        noise_steps=noise_steps,
        facts=facts,
        render_seed=int(rng.integers(0, 2**31 - 1)),
    )
