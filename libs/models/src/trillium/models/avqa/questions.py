"""Question families of AVQA-synth and their answers, computed from the scene description.

Timestamps in questions are written as ``<tK>`` with ``K = first_step + step`` — the same marker
tokens the processor puts in front of each video frame and each audio step. Every question ends with
its subject (the timestamp, the sound or the fact key), so the answer slot that follows the question
sees the subject as its previous token (see the processor's token-shift embedding); the word before
a timestamp names the modality asked about (``at <tK>`` for video, ``during <tK>`` for audio), and the
answer slot sees it as the token before that. Answers are one word (objects are named
``colour-shape``, :func:`object_word`), so each is read by the answer slot's own lookup, except
cross-modal answers: two tokens, the time the sound played and then the colour (``<t7> red``).

Why two tokens for cross-modal (our design choice): the question needs two lookups in a row, the
sound's time in the audio and then the object at that time in the video. As one word, only the
colour is supervised, and three from-scratch trainings never learned the first lookup (cross-modal
stayed at 39-44%, and counting, which needs the same "find this sound" lookup, stayed at its
prior). Answering the time first supervises each lookup on its own, like a one-step
chain of thought; the colour token then reads the video at the time it has just written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trillium.models.avqa.scene import SOUNDS, Scene

FAMILIES: tuple[str, ...] = ("video_recall", "audio_recall", "cross_modal", "counting", "text")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


def object_word(colour: str, shape: str) -> str:
    """The one-word name of a coloured object, e.g. ``red-circle`` (the video-recall answer)."""
    return f"{colour}-{shape}"


def timestamp_token(timestamp: int) -> str:
    """Marker word of one timestamp, e.g. ``<t7>``."""
    return f"<t{timestamp}>"


@dataclass(frozen=True)
class Question:
    """One question: its family, its text, its parameters and the expected answer words."""

    family: str
    text: str
    params: tuple[tuple[str, str], ...]
    answer: tuple[str, ...]

    def param(self, name: str) -> str:
        """Value of one parameter (``ValueError`` if missing)."""
        for key, value in self.params:
            if key == name:
                return value
        raise ValueError(f"question has no parameter {name!r}")


def answer_question(scene: Scene, family: str, params: dict[str, str]) -> tuple[str, ...]:
    """Answer words of question ``family`` with ``params`` on ``scene``."""
    if family == "video_recall":
        track = scene.object_at(int(params["timestamp"]) - scene.first_step)
        return (object_word(track.colour, track.shape),) if track is not None else ("nothing",)
    if family == "audio_recall":
        sound = scene.sound_at(int(params["timestamp"]) - scene.first_step)
        return (sound if sound is not None else "silence",)
    if family == "cross_modal":
        steps = [e.step for e in scene.sounds if e.sound == params["sound"]]
        if len(steps) != 1:
            raise ValueError(
                f"cross_modal needs a sound heard exactly once, {params['sound']} was heard {len(steps)}x"
            )
        track = scene.object_at(steps[0])
        return (
            timestamp_token(scene.first_step + steps[0]),
            track.colour if track is not None else "nothing",
        )
    if family == "counting":
        return (NUMBER_WORDS[sum(e.sound == params["sound"] for e in scene.sounds)],)
    if family == "text":
        for fact in scene.facts:
            if fact.key == params["key"]:
                return (fact.value,)
        raise ValueError(f"text question asks for key {params['key']!r} absent from the scene")
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _make(scene: Scene, family: str, text: str, **params: str) -> Question:
    answer = answer_question(scene, family, params)
    return Question(family, text, tuple(sorted(params.items())), answer)


def draw_question(scene: Scene, family: str, rng: np.random.Generator) -> Question:
    """Draw one question of ``family`` about ``scene`` (every family is always answerable)."""
    n = scene.config.n_frames
    if family == "video_recall":
        visible = [s for s in range(n) if scene.object_at(s) is not None]
        step = visible[int(rng.integers(0, len(visible)))]
        stamp = timestamp_token(scene.first_step + step)
        return _make(scene, family, f"what object was at {stamp}", timestamp=str(scene.first_step + step))
    if family == "audio_recall":
        step = scene.sounds[int(rng.integers(0, len(scene.sounds)))].step
        stamp = timestamp_token(scene.first_step + step)
        text = f"which sound played during {stamp}"
        return _make(scene, family, text, timestamp=str(scene.first_step + step))
    if family == "cross_modal":
        heard = [e.sound for e in scene.sounds]
        once = [e for e in scene.sounds if heard.count(e.sound) == 1 and scene.object_at(e.step) is not None]
        if not once:
            once = [e for e in scene.sounds if heard.count(e.sound) == 1]
        if not once:
            return draw_question(scene, "audio_recall", rng)
        sound = once[int(rng.integers(0, len(once)))].sound
        return _make(scene, family, f"what colour was the object at the {sound}", sound=sound)
    if family == "counting":
        heard = sorted({e.sound for e in scene.sounds})
        pool = heard if rng.random() < 0.85 else list(SOUNDS)
        sound = pool[int(rng.integers(0, len(pool)))]
        return _make(scene, family, f"how many times sounded the {sound}", sound=sound)
    if family == "text":
        fact = scene.facts[int(rng.integers(0, len(scene.facts)))]
        return _make(scene, family, f"what is the {fact.key}", key=fact.key)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
