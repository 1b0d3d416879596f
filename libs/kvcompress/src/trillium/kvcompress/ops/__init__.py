"""Attention operators over compressed caches (torch reference implementations)."""

from trillium.kvcompress.ops.varlen import (
    grouped_attention,
    merge_attention_states,
    varlen_decode_attention,
    varlen_decode_attention_reference,
)

__all__ = [
    "grouped_attention",
    "merge_attention_states",
    "varlen_decode_attention",
    "varlen_decode_attention_reference",
]
