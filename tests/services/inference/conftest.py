"""Helpers shared by the inference service tests: a tiny random text causal LM saved like a real
checkpoint (safetensors, a word-level tokenizer with a chat template), so the service loads it
through the same code path as SmolLM2."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = (
    ["<unk>", "<eos>", "<user>", "<assistant>"]
    + [f"w{i}" for i in range(60)]
    + [
        "what",
        "is",
        "the",
        "capital",
        "of",
        "france",
        "paris",
        "?",
    ]
)
CHAT_TEMPLATE = "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}<assistant>"


def save_tiny_text_model(folder: Path, seed: int = 0, max_positions: int = 1024) -> None:
    """A 2-layer Llama (GQA 4/2) and its tokenizer, saved offline into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=1,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
