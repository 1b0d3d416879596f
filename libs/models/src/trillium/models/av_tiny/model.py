"""The av-tiny decoder: a plain ``Qwen2ForCausalLM`` over av-tiny's discrete token vocabulary.

Every modality is a token id (codebook indices, timestamps, words), so the decoder is an unmodified
transformers architecture: kvcompress, kvpress and ``generate`` apply as they do to any text model.
Prompts enter as ``inputs_embeds`` = token embedding + the embeddings of the processor's auxiliary
ids (:func:`embed_inputs`; time, row/column and the two previous tokens, all rows of the same embedding
table); generated tokens enter as plain ``input_ids``. Loading is
``AutoModelForCausalLM.from_pretrained(path)`` or :func:`load_av_tiny`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from trillium.models.av_tiny.processor import AVTinyProcessor


@dataclass(frozen=True)
class DecoderSize:
    """Decoder hyperparameters (Qwen2 family; GQA with ``kv_heads`` < ``heads``).

    ``rope_theta`` is 1e6, Qwen2's own value for long contexts, not 1e4: every lookup the questions
    need matches content (a timestamp, a key) hundreds of tokens away, and with head dimension 24
    only the slowly rotating RoPE frequencies keep such a match; at 1e4 about a quarter of them turn
    less than a radian over 600 tokens, at 1e6 about half do (Xiong et al. 2023, arXiv 2309.16039,
    raise the base for the same reason)."""

    hidden: int = 96
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    max_positions: int = 8192
    rope_theta: float = 1_000_000.0


def decoder_config(processor: AVTinyProcessor, size: DecoderSize = DecoderSize()) -> Qwen2Config:
    """``Qwen2Config`` of an av-tiny decoder for ``processor``'s vocabulary."""
    if size.hidden % size.heads or size.heads % size.kv_heads:
        raise ValueError(f"size must have hidden % heads == 0 and heads % kv_heads == 0, got {size}")
    return Qwen2Config(
        vocab_size=processor.vocab_size,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=size.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta},
        tie_word_embeddings=False,
        pad_token_id=processor.token_id("<pad>"),
        bos_token_id=processor.token_id("<bos>"),
        eos_token_id=processor.token_id("<eos>"),
    )


def build_model(
    processor: AVTinyProcessor, size: DecoderSize = DecoderSize(), seed: int = 0
) -> Qwen2ForCausalLM:
    """A randomly initialised av-tiny decoder (deterministic for a given ``seed``)."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(decoder_config(processor, size))


def embed_inputs(model: PreTrainedModel, input_ids: torch.Tensor, aux_ids: torch.Tensor) -> torch.Tensor:
    """Prompt embeddings ``[B, L, hidden]``: ``E[input_ids] + sum_c E[aux_ids[..., c]]`` over the
    auxiliary channels that are set (``aux_ids [B, L, C]``, -1 = none); ``E`` is the decoder's own
    input embedding table, so the saved model holds every parameter."""
    if aux_ids.shape[:2] != input_ids.shape:
        raise ValueError(
            f"aux_ids must be [B, L, C] with [B, L] = input_ids shape {tuple(input_ids.shape)}, "
            f"got {tuple(aux_ids.shape)}"
        )
    table = model.get_input_embeddings()
    present = (aux_ids >= 0).unsqueeze(-1).to(table.weight.dtype)
    return table(input_ids) + (table(aux_ids.clamp_min(0)) * present).sum(dim=2)


def embed_inputs_reference(
    model: PreTrainedModel, input_ids: torch.Tensor, aux_ids: torch.Tensor
) -> torch.Tensor:
    """Slow, obvious reference of :func:`embed_inputs` (one position and channel at a time)."""
    weight = model.get_input_embeddings().weight
    out = torch.zeros(*input_ids.shape, weight.shape[1], dtype=weight.dtype)
    for b in range(input_ids.shape[0]):
        for i in range(input_ids.shape[1]):
            out[b, i] = weight[input_ids[b, i]]
            for extra in aux_ids[b, i].tolist():
                if extra >= 0:
                    out[b, i] += weight[extra]
    return out


def load_av_tiny(directory: str | Path) -> tuple[Qwen2ForCausalLM, AVTinyProcessor]:
    """Load a saved av-tiny (decoder + processor) from ``directory``, offline, in eval mode."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"directory {directory} holds no config.json (not a saved av-tiny model)")
    model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True)
    return model.eval(), AVTinyProcessor.from_pretrained(directory)
