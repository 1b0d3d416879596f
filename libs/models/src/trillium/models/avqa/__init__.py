"""AVQA-synth: seeded synthetic audio-visual question answering.

A generator draws a :class:`Scene` (coloured objects moving on a grid, sound events, distractors,
text facts), renders it into RGB frames and PCM audio, and asks questions of five families —
video recall, audio recall, cross-modal, counting and text — whose answers are recomputable from
the scene description (:func:`answer_question`).
"""

from trillium.models.avqa.dataset import (
    HELDOUT_FRAMES,
    TRAIN_FRAMES,
    Sample,
    facts_text,
    heldout_config,
    heldout_samples,
    make_sample,
    training_batches,
    training_config,
)
from trillium.models.avqa.questions import (
    FAMILIES,
    NUMBER_WORDS,
    Question,
    answer_question,
    draw_question,
    object_word,
)
from trillium.models.avqa.render import render_audio, render_video
from trillium.models.avqa.scene import (
    COLOURS,
    FACT_KEYS,
    FACT_VALUES,
    MAX_TIMESTAMP,
    SHAPES,
    SOUNDS,
    AVQAConfig,
    Fact,
    ObjectTrack,
    Scene,
    SoundEvent,
    generate_scene,
)

__all__ = [
    "COLOURS", "FACT_KEYS", "FACT_VALUES", "FAMILIES", "HELDOUT_FRAMES", "MAX_TIMESTAMP", "NUMBER_WORDS",
    "SHAPES", "SOUNDS", "TRAIN_FRAMES", "AVQAConfig", "Fact", "ObjectTrack", "Question", "Sample", "Scene",
    "SoundEvent", "answer_question",
    "object_word", "draw_question", "facts_text", "generate_scene", "heldout_config",
    "heldout_samples", "make_sample", "render_audio", "render_video", "training_config", "training_batches",
]  # fmt: skip
