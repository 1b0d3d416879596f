"""Triton kernels for the hot paths of KV compression, each with a torch path of the same semantics.

Every module holds the ``@triton.jit`` kernel, its Python launcher (``*_triton``), a torch reference
beside it and a dispatcher that runs Triton on CUDA tensors and torch elsewhere. On CPU-only machines
the kernels are tested under the Triton interpreter (``TRITON_INTERPRET=1`` set before import).

- :mod:`.block_sparse` - block-sparse causal prefill attention (ST-SpAttn, PureKV 2510.25600);
- :mod:`.window_scoring` - observation-window attention scores (SnapKV 2404.14469 and successors);
- :mod:`.gather_kept` - packing kept tokens into a flattened ragged per-head cache (AdaKV 2407.11550);
- :mod:`.varlen_decode` - decode attention over that ragged cache.
"""

from trillium.kvcompress.kernels._triton import triton_available
from trillium.kvcompress.kernels.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparse_attention_torch,
    block_sparse_attention_triton,
    expand_block_mask,
)
from trillium.kvcompress.kernels.gather_kept import (
    gather_kept_reference,
    gather_kept_tokens,
    gather_kept_torch,
    gather_kept_triton,
    kept_indices_from_mask,
)
from trillium.kvcompress.kernels.varlen_decode import (
    varlen_decode_attention,
    varlen_decode_attention_torch,
    varlen_decode_attention_triton,
)
from trillium.kvcompress.kernels.window_scoring import (
    window_scores,
    window_scores_reference,
    window_scores_triton,
)

__all__ = [
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "block_sparse_attention_torch",
    "block_sparse_attention_triton",
    "expand_block_mask",
    "gather_kept_reference",
    "gather_kept_tokens",
    "gather_kept_torch",
    "gather_kept_triton",
    "kept_indices_from_mask",
    "triton_available",
    "varlen_decode_attention",
    "varlen_decode_attention_torch",
    "varlen_decode_attention_triton",
    "window_scores",
    "window_scores_reference",
    "window_scores_triton",
]
