"""A request's ``GenerationParams`` checked, and a kvcompress report turned into ``CompressionSummary``.

Token accounting of a compressed prompt: heads keep different tokens, so "tokens kept" is the
mean over layers and KV heads of the entries each head keeps (``kept_fraction * L``, rounded); the
per-modality kept counts are the same mean per modality, apportioned by largest remainder so that
they sum exactly to ``tokens_kept`` (Hamilton's method), and ``seen`` counts sum to ``tokens_before``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trillium.inference.service.policies import MODALITY_BY_LABEL
from trillium.inference.v1 import inference_pb2
from trillium.kvcompress.report import CompressionReport
from trillium.servicekit.errors import ValidationError

DEFAULT_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS_LIMIT = 4096
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 256


@dataclass(frozen=True)
class DecodeSettings:
    """Decoding knobs of one request (``temperature == 0`` is greedy)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool = False


def decode_settings(
    params: inference_pb2.GenerationParams,
    default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limit: int = MAX_NEW_TOKENS_LIMIT,
) -> DecodeSettings:
    """Validate ``request.generation``: ``max_new_tokens`` 0 means the default, more than ``limit``
    (the server's ``max_new_tokens_limit``) is refused, never capped; ``top_p`` 0 means no nucleus
    filter; ``seed`` 0 means unseeded (sampling only)."""
    if not 0 <= params.max_new_tokens <= limit:
        raise ValidationError(
            "generation.max_new_tokens",
            f"must be 0 (the default, {default_max_new_tokens}) to {limit} (the server's "
            f"max_new_tokens_limit), got {params.max_new_tokens}",
        )
    if not (math.isfinite(params.temperature) and params.temperature >= 0.0):
        raise ValidationError("generation.temperature", f"must be >= 0, got {params.temperature}")
    if not (math.isfinite(params.top_p) and 0.0 <= params.top_p <= 1.0):
        raise ValidationError("generation.top_p", f"must be in [0, 1] (0 = off), got {params.top_p}")
    if params.top_k:
        raise ValidationError("generation.top_k", "top-k sampling is not supported; use top_p")
    if len(params.stop) > MAX_STOP_STRINGS:
        raise ValidationError("generation.stop", f"at most {MAX_STOP_STRINGS}, got {len(params.stop)}")
    for index, stop in enumerate(params.stop):
        if not stop or len(stop) > MAX_STOP_LENGTH:
            raise ValidationError(f"generation.stop[{index}]", f"must be 1 to {MAX_STOP_LENGTH} characters")
    requested = params.max_new_tokens or default_max_new_tokens
    return DecodeSettings(
        max_new_tokens=requested,
        temperature=float(params.temperature),
        top_p=float(params.top_p) if params.top_p > 0.0 else 1.0,
        seed=int(params.seed) if params.temperature > 0.0 and params.seed else None,
        stop=() if params.ignore_eos else tuple(params.stop),
        ignore_eos=bool(params.ignore_eos),
    )


def ends_with_stop(text: str, stops: tuple[str, ...]) -> bool:
    """True when the text decoded so far ends with one of the stop strings."""
    return any(text.endswith(stop) for stop in stops)


def apportion(weights: dict[str, float], total: int) -> dict[str, int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainder)."""
    mass = sum(weights.values())
    if total <= 0 or mass <= 0:
        return dict.fromkeys(weights, 0)
    exact = {k: w * total / mass for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    for key in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[key] += 1
    return out


def kept_tokens(report: CompressionReport) -> int:
    """Mean prompt tokens kept per layer and KV head, rounded."""
    return round(report.kept_fraction * report.prompt_length)


def per_modality(report: CompressionReport) -> dict[str, tuple[int, int]]:
    """``{modality label: (seen, kept)}`` for every modality present in the prompt."""
    seen = {m: n for m, n in report.prompt_tokens_per_modality.items() if n > 0}
    totals = report.kept_per_modality
    kept = apportion({m: float(totals.get(m, 0)) for m in seen}, kept_tokens(report))
    return {m: (seen[m], kept[m]) for m in seen}


def compression_summary(
    report: CompressionReport, policy: str, sparse_prefill: bool = False, attention_density: float = 1.0
) -> inference_pb2.CompressionSummary:
    """The wire summary of one prefill (``policy`` as the client named it, ``"none"`` for full);
    ``attention_density`` is the fraction of causal attention tiles the sparse prefill computed."""
    return inference_pb2.CompressionSummary(
        policy=policy,
        tokens_before=report.prompt_length,
        tokens_kept=kept_tokens(report),
        kv_bytes_before=report.bytes_before,
        kv_bytes_after=report.bytes_after,
        per_modality=[
            inference_pb2.ModalityTokens(modality=MODALITY_BY_LABEL[m], seen=s, kept=k)
            for m, (s, k) in per_modality(report).items()
            if m in MODALITY_BY_LABEL
        ],
        per_layer=[
            inference_pb2.LayerTokens(layer=i, kept_per_head=heads)
            for i, heads in enumerate(report.kept_per_layer_head)
        ],
        compression_seconds=report.compress_seconds,
        sparse_prefill=sparse_prefill,
        prefill_attention_density=attention_density,
    )
