"""AVQA-synth: seeded synthetic audio-visual question answering.

A generator draws a :class:`Scene` (coloured objects moving on a grid, sound events, distractors,
text facts), renders it into RGB frames and PCM audio, and asks questions of five families —
video recall, audio recall, cross-modal, counting and text — whose answers are recomputable from
the scene description (:func:`answer_question`).
"""

from trillium.models.avqa.dataset import (
    HELDOUT_FRAMES,
    LONG_TRAIN_FRAME_SIZES,
    LONG_TRAIN_FRAMES,
    TRAIN_FRAMES,
    LongClips,
    Sample,
    facts_text,
    heldout_config,
    heldout_samples,
    long_training_config,
    make_sample,
    training_batches,
    training_config,
    validation_samples,
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
    "COLOURS", "FACT_KEYS", "FACT_VALUES", "FAMILIES", "HELDOUT_FRAMES",
    "LONG_TRAIN_FRAME_SIZES", "LONG_TRAIN_FRAMES", "MAX_TIMESTAMP", "NUMBER_WORDS",
    "SHAPES", "SOUNDS", "TRAIN_FRAMES", "AVQAConfig", "Fact", "ObjectTrack", "Question", "Sample", "Scene",
    "SoundEvent", "LongClips", "answer_question", "long_training_config",
    "object_word", "draw_question", "facts_text", "generate_scene", "heldout_config",
    "heldout_samples", "make_sample", "render_audio", "render_video", "training_config", "training_batches",
    "validation_samples",
]  # fmt: skip
