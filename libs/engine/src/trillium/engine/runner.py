"""The model runner: one packed forward pass per engine step, compression at a prompt's end.

:class:`ModelRunner` owns the model (its attention implementation set to
:data:`~trillium.engine.attention.ENGINE_ATTENTION`). :meth:`ModelRunner.run` takes the step's decode
sequences and prefill chunks, packs their tokens into one ``[1, T]`` row (decode tokens first), runs
the decoder once and returns the next-token logits of every sequence that needs one (each decode
sequence, and each prompt whose last chunk ran). :class:`_StepAttention` routes each layer's
attention per sequence (module docstring of :mod:`trillium.engine.attention`).

Compression: a prompt prefilled in chunks keeps, per layer, its dense keys and values, the queries of
the rows its policy scores (:meth:`~trillium.kvcompress.policies.base.Policy.scored_rows`) and, for
H2O, the attention each key received, summed chunk by chunk (exact by linearity). At the prompt's
last chunk each layer is compressed right after its attention, through kvcompress's
:class:`~trillium.kvcompress.hf.CompressionSession` (the same report as the library's own path).
A policy with its own prefill attention (PureKV's ST-SpAttn) prefills its prompt in one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trillium.engine.attention import ENGINE_ATTENTION, active_step, decode_attention
from trillium.engine.kv import CompressedLayerKV, DenseLayerKV
from trillium.engine.memory import KVShape
from trillium.engine.sequence import Sequence
from trillium.kvcompress.cache import CompressedCache
from trillium.kvcompress.hf import CompressionSession, decoder_layers
from trillium.kvcompress.layout import Modality
from trillium.kvcompress.policies.base import LayerInputs
from trillium.kvcompress.report import CompressionReport

__all__ = ["ModelRunner", "PrefillChunk", "kv_shape"]


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def max_positions(model: nn.Module) -> int:
    """The model's context: ``max_position_embeddings`` of its (text) config."""
    return int(getattr(_text_config(model), "max_position_embeddings", 2**31))


def kv_shape(model: nn.Module) -> KVShape:
    """The KV geometry of a Hugging Face decoder (text config of a VLM)."""
    config = _text_config(model)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype = next(model.parameters()).dtype
    return KVShape(
        num_layers=len(decoder_layers(model)),
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        dtype_bytes=torch.finfo(dtype).bits // 8,
    )


@dataclass(frozen=True)
class PrefillChunk:
    """Prompt rows ``start:start + length`` of ``sequence``; ``final`` when they end the prompt."""

    sequence: Sequence
    start: int
    length: int

    @property
    def final(self) -> bool:
        return self.start + self.length == self.sequence.prompt_length


class ModelRunner:
    """A loaded decoder that runs packed engine steps (see the module docstring)."""

    def __init__(self, model: nn.Module, *, decode_backend: str = "auto") -> None:
        self.model = model.eval()
        self.shape = kv_shape(model)
        self.decode_backend = decode_backend
        self.embedding = model.get_input_embeddings()
        self.device = self.embedding.weight.device
        self.dtype = self.embedding.weight.dtype
        attention = decoder_layers(model)[0].self_attn
        self.query_heads = attention.q_proj.out_features // attention.head_dim
        self._set_attention(model)

    @staticmethod
    def _set_attention(model: nn.Module) -> None:
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation"):
                config._attn_implementation = ENGINE_ATTENTION

    # ----------------------------------------------------------------- per-sequence set-up
    def start(self, sequence: Sequence) -> None:
        """Allocate a sequence's dense prompt buffers and compression state (at admission)."""
        request, shape = sequence.request, self.shape
        length = sequence.prompt_length
        capacity = length + request.max_new_tokens if request.policy is None else length
        sequence.stores = [
            DenseLayerKV(shape.num_kv_heads, capacity, shape.head_dim, self.dtype, self.device)
            for _ in range(shape.num_layers)
        ]
        if request.policy is not None:
            sequence.session = CompressionSession(
                policy=request.policy,
                layout=request.layout,
                cache=CompressedCache(shape.num_layers),
                num_layers=shape.num_layers,
            )
            rows = request.policy.scored_rows(request.layout)
            sequence.state["scored_rows"] = rows
            sequence.kept_queries = [[] for _ in range(shape.num_layers)]
            if request.policy.needs_attention_weights:
                sequence.column_sums = [
                    torch.zeros(self.query_heads, length, device=self.device) for _ in range(shape.num_layers)
                ]
        if request.seed is not None:
            sequence.generator = torch.Generator(device="cpu").manual_seed(request.seed)

    def release(self, sequence: Sequence) -> None:
        """Drop every tensor a sequence holds (finished, failed or cancelled)."""
        sequence.stores, sequence.kept_queries, sequence.column_sums = [], [], []
        sequence.session = None

    def single_chunk(self, sequence: Sequence) -> bool:
        """True when the sequence's prompt must be prefilled in one pass (own prefill attention)."""
        policy = sequence.request.policy
        return policy is not None and policy.prefill_attention is not None

    # ----------------------------------------------------------------- the step
    @torch.no_grad()
    def run(self, decode: list[Sequence], prefill: list[PrefillChunk]) -> dict[int, torch.Tensor]:
        """One forward over the step; ``{sequence id: [V] float32 logits}`` for those that need them."""
        embeds, positions, logit_rows, owners = [], [], [], []
        if decode:
            last = torch.tensor([seq.tokens[-1] for seq in decode], device=self.device)
            embeds.append(self.embedding(last))
            positions.append(torch.tensor([seq.next_position for seq in decode]))
            logit_rows.extend(range(len(decode)))
            owners.extend(seq.id for seq in decode)
        offset = len(decode)
        for chunk in prefill:
            embeds.append(self._prompt_embeds(chunk))
            positions.append(torch.arange(chunk.start, chunk.start + chunk.length))
            offset += chunk.length
            if chunk.final:
                logit_rows.append(offset - 1)
                owners.append(chunk.sequence.id)
        step = _StepAttention(self, decode, prefill)
        with active_step(step):
            out = self.model(
                inputs_embeds=torch.cat(embeds).unsqueeze(0),
                position_ids=torch.cat(positions).unsqueeze(0).to(self.device),
                use_cache=False,
                logits_to_keep=torch.tensor(logit_rows, dtype=torch.long, device=self.device),
            )
        for chunk in prefill:
            chunk.sequence.prefilled = chunk.start + chunk.length
        logits = out.logits[0].float()
        return {owner: logits[i] for i, owner in enumerate(owners)}

    def _prompt_embeds(self, chunk: PrefillChunk) -> torch.Tensor:
        request = chunk.sequence.request
        rows = slice(chunk.start, chunk.start + chunk.length)
        if request.prompt_embeds is not None:
            return request.prompt_embeds[rows].to(self.device, self.dtype)
        return self.embedding(request.prompt_ids[rows].to(self.device))

    # ----------------------------------------------------------------- prefill and compression
    def prefill_chunk(  # noqa: PLR0917 (the attention call's own arguments)
        self,
        chunk: PrefillChunk,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Store a chunk's keys/values in its layer and attend: ``[H_q, n, D]`` -> ``[n, H_q, D]``."""
        sequence, layer = chunk.sequence, module.layer_idx
        store = sequence.stores[layer]
        store.append(key, value)
        policy = sequence.request.policy
        if policy is not None and policy.prefill_attention is not None:
            out = policy.prefill_attention(
                module,
                query.unsqueeze(0),
                key.unsqueeze(0),
                value.unsqueeze(0),
                layout=sequence.request.layout,
                scaling=scale,
            )[0]
        else:
            sums = bool(sequence.column_sums)
            out, column_sums = store.attend_chunk(query, scale, column_sums=sums)
            out = out.transpose(0, 1)
            if column_sums is not None:
                sequence.column_sums[layer][:, : store.length] += column_sums
        if policy is not None:
            self._keep_queries(sequence, layer, chunk, query)
            if chunk.final:
                self._compress_layer(sequence, module)
        return out

    def _keep_queries(self, sequence: Sequence, layer: int, chunk: PrefillChunk, query: torch.Tensor) -> None:
        rows = sequence.state["scored_rows"]
        if rows is None:
            sequence.kept_queries[layer].append(query.clone())
            return
        rows = rows.to(query.device)
        inside = rows[(rows >= chunk.start) & (rows < chunk.start + chunk.length)]
        if inside.numel():
            sequence.kept_queries[layer].append(query[:, inside - chunk.start].clone())

    def _compress_layer(self, sequence: Sequence, module: nn.Module) -> None:
        layer, request = module.layer_idx, sequence.request
        dense = sequence.stores[layer]
        length = sequence.prompt_length
        kept = sequence.kept_queries[layer]
        rows = sequence.state["scored_rows"]
        inputs = LayerInputs(
            layer_idx=layer,
            num_layers=self.shape.num_layers,
            keys=dense.keys[:, :length],
            values=dense.values[:, :length],
            layout=request.layout,
            attention=module,
            queries=torch.cat(kept, dim=1) if kept else None,
            query_rows=None if rows is None else rows.to(self.device),
            accumulated_attention=sequence.column_sums[layer] if sequence.column_sums else None,
        )
        if inputs.queries is None and rows is not None:
            inputs.queries = dense.keys.new_zeros(self.query_heads, 0, dense.keys.shape[-1])
        result = sequence.session.compress_layer(inputs)
        sequence.stores[layer] = CompressedLayerKV(result.keys, result.values, length, request.max_new_tokens)
        sequence.kept_queries[layer] = []
        if sequence.column_sums:
            sequence.column_sums[layer] = torch.zeros(0)
        if layer == self.shape.num_layers - 1:
            sequence.session.finish(sum(store.nbytes() for store in sequence.stores))
            sequence.report = sequence.session.report

    def full_cache_report(self, sequence: Sequence) -> CompressionReport:
        """The report of a prompt kept whole (policy ``none``)."""
        shape, length = self.shape, sequence.prompt_length
        counts = sequence.request.layout.counts()
        nbytes = shape.dense_bytes(length)
        per_modality = {m.label: counts.get(m, 0) * shape.num_kv_heads for m in Modality}
        return CompressionReport(
            policy="none",
            prompt_length=length,
            prompt_tokens_per_modality={m.label: n for m, n in counts.items()},
            kept_per_layer_head=[[length] * shape.num_kv_heads for _ in range(shape.num_layers)],
            kept_per_layer_modality=[per_modality for _ in range(shape.num_layers)],
            merged_per_layer=[0] * shape.num_layers,
            bytes_before=nbytes,
            bytes_after=nbytes,
        )


class _StepAttention:
    """Per-layer routing of one packed step (decode rows ``0..S-1``, then the prefill chunks): the
    :class:`~trillium.engine.attention.PackedStep` the runner passes to ``active_step``."""

    def __init__(self, runner: ModelRunner, decode: list[Sequence], prefill: list[PrefillChunk]) -> None:
        self.runner = runner
        self.decode = decode
        self.prefill = prefill

    def attend(
        self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
    ) -> torch.Tensor:
        layer = module.layer_idx
        q, k, v = query[0], key[0], value[0]
        out = q.new_zeros(q.shape[1], q.shape[0], v.shape[-1])
        count = len(self.decode)
        if count:
            stores = [seq.stores[layer] for seq in self.decode]
            for i, store in enumerate(stores):
                store.append(k[:, i : i + 1], v[:, i : i + 1])
            queries = q[:, :count].transpose(0, 1)
            out[:count] = decode_attention(queries, stores, scale, backend=self.runner.decode_backend)
        start = count
        for chunk in self.prefill:
            end = start + chunk.length
            sequence = chunk.sequence
            if sequence.failed is None:
                try:
                    out[start:end] = self.runner.prefill_chunk(
                        chunk, module, q[:, start:end], k[:, start:end], v[:, start:end], scale
                    )
                except Exception as exc:  # this request fails; the others in the step go on
                    sequence.failed = exc
            start = end
        return out
