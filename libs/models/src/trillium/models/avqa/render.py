"""Rendering of a :class:`~trillium.models.avqa.scene.Scene` into raw media.

Video: ``uint8`` RGB frames ``[T, H, W, 3]`` with a noisy dark background, grey distractor shapes and
the coloured object of each step drawn inside its grid cell. Audio: ``float32`` PCM in ``[-1, 1]``
with low background noise, one synthetic sound per event step and broadband noise bursts at the
distractor steps. Rendering is deterministic given the scene (it carries its own ``render_seed``).
"""

from __future__ import annotations

import numpy as np

from trillium.models.avqa.scene import COLOURS, Scene

GREY = (128, 128, 128)


def shape_mask(shape: str, cell: int) -> np.ndarray:
    """Boolean ``[cell, cell]`` mask of a shape centred in one cell (one pixel of margin)."""
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float32)
    centre = (cell - 1) / 2.0
    half = cell / 2.0 - 1.0
    if shape == "square":
        return (np.abs(yy - centre) <= half - 0.5) & (np.abs(xx - centre) <= half - 0.5)
    if shape == "circle":
        return (yy - centre) ** 2 + (xx - centre) ** 2 <= half**2
    if shape == "triangle":
        top, bottom = 1.0, cell - 2.0
        width = (yy - top) / max(bottom - top, 1.0) * half
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - centre) <= width + 0.25)
    raise ValueError(f"shape must be one of square/circle/triangle, got {shape!r}")


def _paint(frame: np.ndarray, cell: int, at: tuple[int, int], shape: str, rgb: tuple[int, int, int]) -> None:
    row, col = at
    block = frame[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
    block[shape_mask(shape, cell)] = rgb


def render_video(scene: Scene) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` (``uint8``) of the scene."""
    cfg = scene.config
    rng = np.random.default_rng([scene.render_seed, 1])
    noise = rng.normal(20.0, 6.0, size=(cfg.n_frames, cfg.frame_size, cfg.frame_size, 3))
    frames = np.clip(noise, 0, 255).astype(np.uint8)
    for step in range(cfg.n_frames):
        for (row, col), shape in zip(scene.grey_cells, scene.grey_shapes, strict=True):
            _paint(frames[step], cfg.cell, (row, col), shape, GREY)
        track = scene.object_at(step)
        if track is not None:
            row, col = track.cells[step - track.start]
            frames[step, row * cfg.cell : (row + 1) * cfg.cell, col * cfg.cell : (col + 1) * cfg.cell] = (
                frames[step, 0, 0]
            )
            _paint(frames[step], cfg.cell, (row, col), track.shape, COLOURS[track.colour])
    return frames


def sound_waveform(sound: str, n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic sound event of class ``sound`` (``float32`` ``[n_samples]``, peak about 0.5)."""
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    if sound == "bell":
        wave = np.sin(2 * np.pi * 880 * t) + 0.5 * np.sin(2 * np.pi * 1760 * t)
    elif sound == "horn":
        wave = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in (1, 2, 3))
    elif sound == "whistle":
        wave = np.sin(2 * np.pi * 2600 * t)
    elif sound == "bird":
        phase = 2 * np.pi * (1200 * t + 0.5 * 4000 * t**2 / (t[-1] + 1e-9) * 0.5)
        wave = np.sin(phase)
    elif sound == "drum":
        wave = rng.normal(0, 1, n_samples)
        spectrum = np.fft.rfft(wave)
        freqs = np.fft.rfftfreq(n_samples, 1 / sample_rate)
        spectrum[(freqs < 60) | (freqs > 300)] = 0
        wave = np.fft.irfft(spectrum, n_samples)
    elif sound == "buzz":
        wave = np.sign(np.sin(2 * np.pi * 140 * t)) * 0.6
    elif sound == "noise":
        wave = rng.normal(0, 1, n_samples)
    else:
        raise ValueError(f"sound {sound!r} is not a known sound class")
    wave = np.asarray(wave, dtype=np.float64)
    wave = wave / (np.abs(wave).max() + 1e-9) * 0.5
    return wave.astype(np.float32)


def render_audio(scene: Scene) -> np.ndarray:
    """PCM waveform ``[T * step_samples]`` (``float32`` in ``[-1, 1]``) of the scene."""
    cfg = scene.config
    rng = np.random.default_rng([scene.render_seed, 2])
    audio = rng.normal(0.0, 0.01, size=cfg.n_frames * cfg.step_samples).astype(np.float32)
    events = [(e.step, e.sound) for e in scene.sounds] + [(s, "noise") for s in scene.noise_steps]
    for step, sound in events:
        start = step * cfg.step_samples
        audio[start : start + cfg.step_samples] += sound_waveform(
            sound, cfg.step_samples, cfg.sample_rate, rng
        )
    return np.clip(audio, -1.0, 1.0)
