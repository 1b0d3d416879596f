"""The fixes of the four seed methods, each checked where the old code went wrong: FlowMM merged
dissimilar tokens with a 50/50 average, MadaKV starved deep layers, AccKV's calibration wiped a
modality on real keys, markers counted as text, and audio was invisible to FlowMM's rho."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trillium.kvcompress import Modality, TokenLayout, generate_with_policy, make_policy
from trillium.kvcompress.budgets import resolve_budget
from trillium.kvcompress.merging import flow_eligibility, matching, nearest_pivots, weighted_merge
from trillium.kvcompress.policies import FlowMM, MadaKV
from trillium.kvcompress.scoring import interaction_ratio, sample_media_rows, sample_visual_rows

REPO = Path(__file__).resolve().parents[2]
AV_TINY = REPO / "assets" / "models" / "av-tiny"
D = 16


def _noise(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _slow_weighted_merge(pivot_k, pivot_v, *, pivot_w, source_k, source_v, source_w, assignment):
    """One pivot at a time, with Python sums: the definition of the weighted mean."""
    keys, values = [], []
    for j in range(pivot_k.shape[0]):
        members = [i for i in range(source_k.shape[0]) if int(assignment[i]) == j]
        weight = float(pivot_w[j]) + sum(float(source_w[i]) for i in members)
        k = pivot_k[j] * float(pivot_w[j]) + sum(
            (source_k[i] * float(source_w[i]) for i in members), torch.zeros(D)
        )
        v = pivot_v[j] * float(pivot_w[j]) + sum(
            (source_v[i] * float(source_w[i]) for i in members), torch.zeros(D)
        )
        keys.append(k / weight if members else pivot_k[j])
        values.append(v / weight if members else pivot_v[j])
    return torch.stack(keys), torch.stack(values)


def test_weighted_merge_equals_the_slow_reference_and_counts_sources() -> None:
    pivot_k, pivot_v = _noise(5, D, seed=1), _noise(5, D, seed=2)
    source_k, source_v = _noise(9, D, seed=3), _noise(9, D, seed=4)
    pivot_w, source_w = _noise(5, seed=5).abs() + 0.1, _noise(9, seed=6).abs()
    assignment = torch.tensor([0, 0, 3, -1, 3, 3, 1, -1, 0])
    sources = {"source_keys": source_k, "source_values": source_v, "source_weight": source_w}
    keys, values, counts = weighted_merge(
        pivot_k, pivot_v, pivot_weight=pivot_w, assignment=assignment, **sources
    )
    want_k, want_v = _slow_weighted_merge(
        pivot_k,
        pivot_v,
        pivot_w=pivot_w,
        source_k=source_k,
        source_v=source_v,
        source_w=source_w,
        assignment=assignment,
    )
    torch.testing.assert_close(keys, want_k)
    torch.testing.assert_close(values, want_v)
    assert counts.tolist() == [3, 1, 0, 3, 0]
    torch.testing.assert_close(keys[2], pivot_k[2])  # untouched pivot
    heavy = weighted_merge(pivot_k, pivot_v, pivot_weight=pivot_w * 1e6, assignment=assignment, **sources)[0]
    torch.testing.assert_close(heavy, pivot_k, atol=1e-4, rtol=1e-4)  # a heavy pivot barely moves


@pytest.mark.parametrize("cross_modal", [False, True])
@pytest.mark.parametrize("min_similarity", [-1.0, 0.2, 0.9])
def test_matching_equals_eligibility_plus_nearest_pivot_plus_floor(cross_modal, min_similarity) -> None:
    source_keys, pivot_keys = _noise(40, D, seed=7), _noise(12, D, seed=8)
    source_keys[:10] = pivot_keys[:10] + 0.1 * _noise(10, D, seed=9)  # some close pairs
    source_modality = torch.randint(0, 2, (40,), generator=torch.Generator().manual_seed(10))
    pivot_modality = torch.randint(0, 2, (12,), generator=torch.Generator().manual_seed(11))
    importance = _noise(12, seed=12).abs()
    tau = float(importance.quantile(0.75))
    got = matching(
        source_keys,
        pivot_keys,
        importance > tau,
        None if cross_modal else (source_modality, pivot_modality),
        min_similarity,
    )
    eligible = flow_eligibility(source_modality, pivot_modality, importance, cross_modal=cross_modal, tau=tau)
    want = nearest_pivots(source_keys, pivot_keys, eligible)
    cosine = F.cosine_similarity(source_keys, pivot_keys[want.clamp_min(0)], dim=-1)
    want = torch.where((want >= 0) & (cosine >= min_similarity), want, -1)
    assert torch.equal(got, want)
    assert (got >= 0).sum() >= (5 if min_similarity > 0.5 else 10)


def test_flowmm_merges_only_similar_pairs_into_an_attention_weighted_mean(layer_inputs_factory) -> None:
    layout = TokenLayout.concat([TokenLayout.text(6), TokenLayout.image(4, 4), TokenLayout.text(8)])
    length = len(layout)
    base = _noise(4, D, seed=9)
    keys = base[torch.arange(length) % 4].unsqueeze(0) + 0.05 * _noise(1, length, D, seed=10)
    keys[0, 20:] = _noise(length - 20, D, seed=11)  # the question: unlike anything
    values = _noise(1, length, D, seed=12)
    queries = _noise(2, length, D, seed=13)
    inputs = layer_inputs_factory(queries, keys, values, layout)
    policy = FlowMM(budget=12, window=8, theta=0.0, protect_quantile=1.0, min_similarity=0.9)
    result = policy.compress_layer(inputs)
    pairs = inputs.state["merge_pairs"][0][0]
    merged = pairs[pairs[:, 1] >= 0]
    assert merged.shape[0] >= 3  # near-duplicates do merge
    cosine = F.cosine_similarity(keys[0, merged[:, 0]], keys[0, merged[:, 1]], dim=-1)
    assert bool((cosine >= 0.9).all())
    importance = inputs.window_scores(torch.arange(length - 8, length))[0]
    sources = result.sources[0]
    for entry, pivot in enumerate(sources.tolist()):
        members = merged[merged[:, 1] == pivot, 0]
        weight = torch.cat([importance[[pivot]], importance[members]])
        rows = torch.cat([keys[0, [pivot]], keys[0, members]])
        torch.testing.assert_close(result.keys[0][entry], (rows * weight[:, None]).sum(0) / weight.sum())
        assert int(result.merged[0][entry]) == members.numel()


def test_media_rows_and_rho_see_audio() -> None:
    layout = TokenLayout.concat([TokenLayout.text(4), TokenLayout.video(2, 2, 2), TokenLayout.audio(30)])
    media = sample_media_rows(layout, per_unit=2, audio_steps_per_unit=10)
    audio = set(torch.nonzero(layout.mask(Modality.AUDIO)).flatten().tolist())
    assert len(set(media.tolist()) & audio) == 6  # two rows in each of the three audio units
    assert not set(sample_visual_rows(layout, 2).tolist()) & audio
    rows = torch.tensor([5, 20, 30])  # a video query, two audio queries
    probs = torch.zeros(1, 1, 3, len(layout))
    probs[0, 0, :, 0] = 1.0  # every query looks only at the first text token
    assert float(interaction_ratio(probs, rows, layout)[0]) == pytest.approx(1.0)  # audio->text counts


def test_segment_modality_gives_markers_their_medium() -> None:
    video = TokenLayout.video(2, 1, 2)
    audio = TokenLayout.audio(3)
    layout = TokenLayout.concat([TokenLayout.text(3), video, audio, TokenLayout.text(2)])
    modality = layout.modality.clone()
    modality[3] = int(Modality.TEXT)  # "<video>" opening the video segment
    modality[9] = int(Modality.TEXT)  # "</audio>" closing the audio segment
    marked = TokenLayout(
        modality=modality,
        segment=layout.segment,
        frame=layout.frame,
        row=layout.row,
        col=layout.col,
        time=layout.time,
        position=layout.position,
    )
    medium = marked.segment_modality()
    assert medium[:3].tolist() == [0, 0, 0] and medium[-2:].tolist() == [0, 0]
    assert medium[3].item() == int(Modality.VIDEO) and medium[9].item() == int(Modality.AUDIO)
    assert torch.equal(medium[4:7], layout.modality[4:7])


def _spread_inputs(layer_inputs_factory, layer_idx: int, state: dict):
    """Near-uniform attention: HCC's demand is most of the prompt in every head."""
    layout = TokenLayout.concat([TokenLayout.text(8), TokenLayout.image(8, 8), TokenLayout.text(8)])
    length = len(layout)
    keys = _noise(2, length, D, seed=20 + layer_idx, scale=0.01)
    queries = _noise(4, length, D, seed=40 + layer_idx, scale=0.01)
    return layer_inputs_factory(
        queries, keys, keys.clone(), layout, layer_idx=layer_idx, num_layers=6, state=state
    )


@pytest.mark.parametrize("layer_floor", [0.0, 0.5, 0.8])
def test_madakv_layer_floor_keeps_every_layer_fed_within_the_total(layer_inputs_factory, layer_floor) -> None:
    policy = MadaKV(budget=0.25, window=4, layer_floor=layer_floor)
    state: dict = {}
    per_layer = []
    for layer in range(6):
        inputs = _spread_inputs(layer_inputs_factory, layer, state)
        kept = policy.compress_layer(inputs).counts()
        per_layer.append(sum(kept) / len(kept))
    n_keep = policy.tokens_to_keep(80)
    floor = max(math.ceil(layer_floor * n_keep), 4)
    assert min(per_layer) >= floor
    assert sum(per_layer) <= 6 * n_keep + 1e-9
    assert sum(per_layer) >= 0.95 * 6 * n_keep  # the budget is used, not only capped
    if layer_floor == 0.0:
        assert min(per_layer) < 0.5 * n_keep  # the starvation the floor prevents


@pytest.fixture(scope="module")
def av_tiny_prompt():
    """A validation prompt of the shipped av-tiny model (context and question)."""
    from trillium.models.av_tiny.evaluate import sample_inputs
    from trillium.models.av_tiny.model import embed_inputs, load_av_tiny
    from trillium.models.avqa.dataset import validation_samples

    model, processor = load_av_tiny(AV_TINY)
    model.eval()
    sample = validation_samples(1, (11,))[2]
    inputs = sample_inputs(processor, sample, 0)
    with torch.no_grad():
        embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
    return model, inputs, embeds


@pytest.mark.parametrize("question_aware", [False, True])
def test_acckv_calibration_on_real_keys_keeps_every_modality_in_every_head(
    av_tiny_prompt, question_aware
) -> None:
    model, inputs, embeds = av_tiny_prompt
    span = inputs.input_ids.shape[1] - 1 if question_aware else inputs.question_start
    layout = inputs.layout.select(range(span))
    budget = 0.2
    result = generate_with_policy(
        model,
        inputs_embeds=embeds[:, :span],
        layout=layout,
        policy=make_policy("acckv", budget=budget, tau=0.6),  # the summary's tau, which wiped audio
        max_new_tokens=1,
        show_progress=False,
    )
    report = result.report
    n_keep = resolve_budget(budget, span)
    for layer, per_head in enumerate(report.kept_per_layer_head):
        assert all(n == n_keep for n in per_head), (layer, per_head, n_keep)  # the budget, refilled
        kept = report.kept_per_layer_modality[layer]
        heads = len(per_head)
        assert kept["audio"] >= heads and kept["video"] >= heads, (layer, kept)
