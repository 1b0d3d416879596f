"""Phonemes -> visemes -> ARKit mouth coefficients with coarticulation, sampled at 25 fps.

Used to build *target* mouth motion for speech synthesised with espeak-ng, so the audio-to-motion
network of Yu et al.'s GaussianTalker (arXiv 2404.14037, "Speaker-specific Motion Translator") can
be trained and evaluated without recorded faces. The paper does not publish such a table; every
number below is our design choice:

- 15 visemes with the Oculus/MPEG-4-style names ``sil PP FF TH DD kk CH SS nn RR aa E ih oh ou``;
- espeak-ng English phoneme mnemonics (e.g. ``p``, ``oU``, ``3:``, ``@2``) map to a viseme; unknown
  mnemonics fall back by stripping stress / variant marks, then by their first letter;
- each viseme has a target vector over :data:`MOUTH_COEFFICIENTS` (ARKit blendshape names, [0, 1]);
- coarticulation by dominance blending (in the spirit of Cohen & Massaro 1993): phoneme ``k`` with
  onset ``t_k`` holds its target until ``t_{k+1}`` and fades in / out linearly over ``attack`` /
  ``release`` seconds; the track is the dominance-weighted mean of all active targets. Bilabials and
  labiodentals dominate so lip closures are reached even in fast speech.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

VIDEO_FPS = 25

MOUTH_COEFFICIENTS = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
)
"""ARKit mouth blendshapes driven from speech, in this order."""

JAW_CHANNEL = "jawPitch"
MOTION_CHANNELS = (*MOUTH_COEFFICIENTS, JAW_CHANNEL)
"""Channels of a motion track: the mouth coefficients, then jaw pitch in radians (rotation about x)."""

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")


def _sym(name: str, value: float) -> dict[str, float]:
    return {f"{name}Left": value, f"{name}Right": value}


VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"mouthClose": 0.9, "jawOpen": 0.05, "mouthRollLower": 0.25, "mouthRollUpper": 0.2},
    "FF": {"jawOpen": 0.1, "mouthRollLower": 0.6, **_sym("mouthUpperUp", 0.3)},
    "TH": {"jawOpen": 0.2, **_sym("mouthStretch", 0.2), **_sym("mouthLowerDown", 0.2)},
    "DD": {"jawOpen": 0.25, **_sym("mouthStretch", 0.25), **_sym("mouthUpperUp", 0.15)},
    "kk": {"jawOpen": 0.3, **_sym("mouthStretch", 0.2)},
    "CH": {"jawOpen": 0.2, "mouthFunnel": 0.5, "mouthPucker": 0.3, **_sym("mouthUpperUp", 0.3)},
    "SS": {"jawOpen": 0.1, **_sym("mouthSmile", 0.35), **_sym("mouthStretch", 0.4)},
    "nn": {"jawOpen": 0.2, **_sym("mouthStretch", 0.2), **_sym("mouthUpperUp", 0.1)},
    "RR": {"jawOpen": 0.2, "mouthFunnel": 0.4, "mouthPucker": 0.3},
    "aa": {"jawOpen": 0.7, **_sym("mouthLowerDown", 0.4), **_sym("mouthUpperUp", 0.2)},
    "E": {
        "jawOpen": 0.45,
        **_sym("mouthSmile", 0.35),
        **_sym("mouthStretch", 0.3),
        **_sym("mouthLowerDown", 0.2),
    },
    "ih": {"jawOpen": 0.3, **_sym("mouthSmile", 0.4), **_sym("mouthStretch", 0.2)},
    "oh": {"jawOpen": 0.5, "mouthFunnel": 0.6, "mouthPucker": 0.3},
    "ou": {"jawOpen": 0.2, "mouthPucker": 0.8, "mouthFunnel": 0.4},
}

VISEME_DOMINANCE = {"PP": 3.0, "FF": 2.0, "sil": 0.7}
"""Blending weight per viseme (1 when absent)."""

PHONEME_TO_VISEME: dict[str, str] = {
    **dict.fromkeys(["_", "_:", "_!", "_|", "_^_", "||", "|", ";"], "sil"),
    **dict.fromkeys(["p", "b", "m", "m-"], "PP"),
    **dict.fromkeys(["f", "v"], "FF"),
    **dict.fromkeys(["T", "D"], "TH"),
    **dict.fromkeys(["t", "d", "t#", "d#", "?", "t2", "d2"], "DD"),
    **dict.fromkeys(["k", "g", "N", "h", "x"], "kk"),
    **dict.fromkeys(["tS", "dZ", "S", "Z"], "CH"),
    **dict.fromkeys(["s", "z"], "SS"),
    **dict.fromkeys(["n", "l", "n-", "l-", "L", "j"], "nn"),
    **dict.fromkeys(["r", "r-", "3:", "3", "@r", "A@", "R"], "RR"),
    **dict.fromkeys(["a", "aa", "A:", "A", "aI", "aU", "V", "a#", "aI@", "aI3", "aU@"], "aa"),
    **dict.fromkeys(["e", "E", "eI", "e@", "E2", "E@"], "E"),
    **dict.fromkeys(["i", "i:", "I", "I2", "I#", "i@", "i@3", "@", "@2", "@5", "@L", "a2", "IR"], "ih"),
    **dict.fromkeys(["0", "O:", "O", "O@", "oU", "OI", "o@", "o", "0#"], "oh"),
    **dict.fromkeys(["u:", "U", "w", "U@", "u", "W", "u@"], "ou"),
}


@dataclass(frozen=True)
class PhonemeEvent:
    """A phoneme onset: ``time_s`` seconds from the start of the utterance, espeak-ng mnemonic."""

    time_s: float
    phoneme: str


@dataclass(frozen=True)
class ArticulationStyle:
    """A speaker's way of moving the mouth (our stand-in for Yu et al.'s speaker-specific motion).

    Attributes:
        jaw_gain: multiplies ``jawOpen``.
        smile_bias: added to ``mouthSmileLeft/Right`` (a resting smile).
        pucker_gain: multiplies ``mouthPucker`` and ``mouthFunnel``.
        attack_s: seconds a viseme takes to fade in before its onset.
        release_s: seconds it takes to fade out after the next onset.
        jaw_angle_rad: jaw pitch (radians) at ``jawOpen = 1``, for the jaw-rotation channel.
    """

    jaw_gain: float = 1.0
    smile_bias: float = 0.0
    pucker_gain: float = 1.0
    attack_s: float = 0.06
    release_s: float = 0.08
    jaw_angle_rad: float = 0.3

    def __post_init__(self) -> None:
        for name in ("jaw_gain", "pucker_gain", "attack_s", "release_s", "jaw_angle_rad"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def viseme_of(phoneme: str) -> str:
    """Viseme name of an espeak-ng mnemonic (fallbacks: strip digits / ``#`` / ``:``, then first letter)."""
    if not isinstance(phoneme, str) or not phoneme:
        raise ValueError(f"phoneme must be a non-empty string, got {phoneme!r}")
    if phoneme in PHONEME_TO_VISEME:
        return PHONEME_TO_VISEME[phoneme]
    stripped = phoneme.rstrip("0123456789#:;")
    if stripped in PHONEME_TO_VISEME:
        return PHONEME_TO_VISEME[stripped]
    if phoneme[0] == "_":
        return "sil"
    return PHONEME_TO_VISEME.get(phoneme[0], "nn")


def viseme_target(viseme: str) -> Tensor:
    """[C] target coefficients of a viseme over :data:`MOUTH_COEFFICIENTS`."""
    if viseme not in VISEME_TARGETS:
        raise ValueError(f"viseme must be one of {', '.join(VISEMES)}, got {viseme!r}")
    target = torch.zeros(len(MOUTH_COEFFICIENTS))
    for name, value in VISEME_TARGETS[viseme].items():
        target[MOUTH_COEFFICIENTS.index(name)] = value
    return target


def coefficient_track(
    events: Sequence[PhonemeEvent],
    num_frames: int,
    style: ArticulationStyle | None = None,
    fps: int = VIDEO_FPS,
) -> Tensor:
    """Mouth coefficients at video frame times ``f / fps``.

    Args:
        events: phoneme onsets, sorted by time. Silence is assumed before the first and after the last.
        num_frames: F frames to sample.
        style: articulation style (default: neutral).

    Returns:
        [F, C] coefficients in [0, 1] over :data:`MOUTH_COEFFICIENTS`.
    """
    style = style or ArticulationStyle()
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    times = [e.time_s for e in events]
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("events must be sorted by time_s")
    frame_times = torch.arange(num_frames, dtype=torch.float64) / fps
    visemes = ["sil", *(viseme_of(e.phoneme) for e in events), "sil"]
    onsets = [float("-inf"), *times, times[-1] + 0.2 if times else 0.0]
    ends = [*onsets[1:], float("inf")]
    weighted = torch.zeros(num_frames, len(MOUTH_COEFFICIENTS), dtype=torch.float64)
    total = torch.zeros(num_frames, 1, dtype=torch.float64)
    for viseme, onset, end in zip(visemes, onsets, ends):
        weight = _trapezoid(frame_times, onset, end, style.attack_s, style.release_s)
        weight = weight * VISEME_DOMINANCE.get(viseme, 1.0)
        weighted += weight[:, None] * viseme_target(viseme).double()[None, :]
        total += weight[:, None]
    return apply_style(weighted / total.clamp_min(1e-12), style)


def apply_style(coefficients: Tensor, style: ArticulationStyle) -> Tensor:
    """Speaker style on neutral coefficients [F, C] -> [F, C] float32, clamped to [0, 1]."""
    out = coefficients.clone()
    index = {name: i for i, name in enumerate(MOUTH_COEFFICIENTS)}
    out[:, index["jawOpen"]] *= style.jaw_gain
    for name in ("mouthPucker", "mouthFunnel"):
        out[:, index[name]] *= style.pucker_gain
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        out[:, index[name]] += style.smile_bias
    return out.clamp(0.0, 1.0).to(torch.float32)


def _trapezoid(t: Tensor, onset: float, end: float, attack: float, release: float) -> Tensor:
    """1 on [onset, end], linear ramps over ``attack`` before and ``release`` after, 0 elsewhere."""
    rise = ((t - (onset - attack)) / attack).clamp(0.0, 1.0) if onset > float("-inf") else torch.ones_like(t)
    fall = (((end + release) - t) / release).clamp(0.0, 1.0) if end < float("inf") else torch.ones_like(t)
    return torch.minimum(rise, fall)


def motion_track(
    events: Sequence[PhonemeEvent],
    num_frames: int,
    style: ArticulationStyle | None = None,
    fps: int = VIDEO_FPS,
) -> Tensor:
    """[F, C + 1] over :data:`MOTION_CHANNELS`: :func:`coefficient_track` plus the jaw pitch
    ``style.jaw_angle_rad * jawOpen`` (radians)."""
    style = style or ArticulationStyle()
    coefficients = coefficient_track(events, num_frames, style, fps)
    jaw = coefficients[:, MOUTH_COEFFICIENTS.index("jawOpen")] * style.jaw_angle_rad
    return torch.cat([coefficients, jaw[:, None]], dim=1)
