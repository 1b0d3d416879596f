"""What a compression did: tokens kept per layer, head and modality, bytes, time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

__all__ = ["CompressionReport", "GenerationResult"]


@dataclass
class CompressionReport:
    """Statistics of one compressed prompt.

    Attributes:
        policy: registry name of the policy.
        prompt_length: prompt tokens ``L`` before compression.
        prompt_tokens_per_modality: ``{"text": n, ...}`` of the prompt.
        kept_per_layer_head: ``[layer][kv_head]`` entries kept (merged unit tokens included).
        kept_per_layer_modality: ``[layer]{modality: entries}`` summed over the layer's KV heads.
        merged_per_layer: ``[layer]`` evicted tokens folded into kept entries (all heads).
        bytes_before: bytes of the dense prompt KV (what ``DynamicCache`` would hold).
        bytes_after: exact bytes held by the compressed cache right after compression.
        compress_seconds: wall time spent inside the policy (scoring, budgets, merging, packing).
    """

    policy: str
    prompt_length: int
    prompt_tokens_per_modality: dict[str, int]
    kept_per_layer_head: list[list[int]] = field(default_factory=list)
    kept_per_layer_modality: list[dict[str, int]] = field(default_factory=list)
    merged_per_layer: list[int] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    compress_seconds: float = 0.0

    @property
    def kept_per_modality(self) -> dict[str, int]:
        """Entries kept per modality over all layers and heads."""
        total: dict[str, int] = {}
        for per_layer in self.kept_per_layer_modality:
            for name, n in per_layer.items():
                total[name] = total.get(name, 0) + n
        return total

    @property
    def kept_fraction(self) -> float:
        """Entries kept / entries of the dense prompt cache."""
        heads = sum(len(h) for h in self.kept_per_layer_head)
        if heads == 0 or self.prompt_length == 0:
            return 0.0
        return sum(sum(h) for h in self.kept_per_layer_head) / (heads * self.prompt_length)

    @property
    def compression_ratio(self) -> float:
        """``bytes_before / bytes_after``."""
        return self.bytes_before / self.bytes_after if self.bytes_after else float("inf")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kept_per_modality"] = self.kept_per_modality
        out["kept_fraction"] = self.kept_fraction
        return out


@dataclass
class GenerationResult:
    """Output of :func:`trillium.kvcompress.hf.generate_with_policy`.

    Attributes:
        tokens: ``[n]`` int64 generated token ids (eos included if hit).
        report: the prompt's :class:`CompressionReport`.
        stopped_by_eos: whether generation ended on an eos token.
        logits: ``[n, V]`` float32 logits each token was chosen from (if ``return_logits``).
        prefill_seconds: wall time of the prompt forward pass, compression included (plus the
            question forward when a question is given: time to the first token's logits).
        decode_seconds: wall time of the decode forward passes (``len(tokens) - 1`` of them).
    """

    tokens: torch.Tensor
    report: CompressionReport
    stopped_by_eos: bool = False
    logits: torch.Tensor | None = None
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_seconds_per_token(self) -> float:
        """Mean time of one decode step (0 when only the prefill produced a token)."""
        steps = len(self.tokens) - 1
        return self.decode_seconds / steps if steps > 0 else 0.0
