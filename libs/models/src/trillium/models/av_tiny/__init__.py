"""av-tiny: a small audio-video question-answering decoder over discrete codebook tokens.

- :class:`AVTinyProcessor` turns frames, PCM audio and text into ``input_ids``, auxiliary ids and a
  kvcompress :class:`~trillium.kvcompress.layout.TokenLayout`.
- The decoder is a plain ``Qwen2ForCausalLM`` (:func:`build_model`, :func:`load_av_tiny`); prompts
  enter it as :func:`embed_inputs` ``(model, input_ids, aux_ids)``.
- :func:`evaluate` reports accuracy per AVQA-synth family, with a pluggable ``generate_fn``.
- ``python -m trillium.models.av_tiny.train --out DIR [--quick]`` trains it.
"""

from trillium.models.av_tiny.evaluate import (
    EvalResult,
    GenerateFn,
    evaluate,
    full_cache_generate_fn,
    greedy_decode,
    sample_inputs,
)
from trillium.models.av_tiny.eviction import policy_generate_fn
from trillium.models.av_tiny.model import (
    DecoderSize,
    build_model,
    decoder_config,
    embed_inputs,
    load_av_tiny,
)
from trillium.models.av_tiny.processor import AVInputs, AVTinyProcessor

__all__ = [
    "AVInputs",
    "AVTinyProcessor",
    "DecoderSize",
    "EvalResult",
    "GenerateFn",
    "build_model",
    "decoder_config",
    "embed_inputs",
    "evaluate",
    "full_cache_generate_fn",
    "greedy_decode",
    "load_av_tiny",
    "policy_generate_fn",
    "sample_inputs",
]
