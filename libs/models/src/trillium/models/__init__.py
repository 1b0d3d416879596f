"""Models Trillium trains and ships itself.

- :mod:`trillium.models.avqa`: AVQA-synth, a seeded synthetic audio-visual question-answering task.
- :mod:`trillium.models.av_tiny`: ``av-tiny``, a small Qwen2 decoder over discrete video/audio
  codebook tokens, its processor (which also builds the kvcompress token layout), training and
  evaluation.
"""

from importlib.metadata import version

__version__ = version("trillium-models")  # the installed package's version (pyproject.toml)
