"""Per-method tests that fail if the method is wrong (planted queries through a fake attention
module whose recomputed queries are exactly the planted ones)."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress import (
    H2O,
    AccKV,
    AdaKV,
    FlowMM,
    LookM,
    MadaKV,
    Modality,
    PureKV,
    PyramidKV,
    RandomEviction,
    SnapKV,
    StreamingLLM,
    TokenLayout,
)
from trillium.kvcompress.budgets import hcc_demand
from trillium.kvcompress.policies.acckv import alignment_scores
from trillium.kvcompress.policies.base import observation_rows, topk_with_forced
from trillium.kvcompress.scoring import gqa_mean, rows_attention, window_indices

D = 16


def _unit(seed: int) -> torch.Tensor:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _noise(*shape: int, seed: int = 0, scale: float = 0.05) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_streaming_llm_keeps_sinks_and_recent(layer_inputs_factory) -> None:
    length = 30
    keys = _noise(2, length, D)
    inputs = layer_inputs_factory(_noise(4, length, D), keys, keys, TokenLayout.text(length))
    result = StreamingLLM(budget=10, n_sinks=4).compress_layer(inputs)
    for sources in result.sources:
        assert sources.tolist() == [0, 1, 2, 3, 24, 25, 26, 27, 28, 29]
    torch.testing.assert_close(result.keys[1], keys[1, result.sources[1]])


def test_random_eviction_keeps_one_uniform_subset_for_every_layer_and_head(layer_inputs_factory) -> None:
    length = 40
    keys = _noise(2, length, D)
    layout = TokenLayout.text(length)
    inputs = layer_inputs_factory(_noise(4, length, D), keys, keys, layout)
    policy = RandomEviction(budget=0.25, seed=3)
    policy.begin(layout, num_layers=2)
    first, second = policy.compress_layer(inputs), policy.compress_layer(inputs)
    kept = first.sources[0]
    assert kept.numel() == 10 and kept.unique().numel() == 10 and bool((kept.diff() > 0).all())
    assert all(torch.equal(s, kept) for s in first.sources + second.sources)
    torch.testing.assert_close(first.keys[1], keys[1, kept])
    policy.begin(layout, num_layers=2)
    assert torch.equal(policy.compress_layer(inputs).sources[0], kept)  # same request, same entries
    other = RandomEviction(budget=0.25, seed=4)
    other.begin(layout, num_layers=2)
    assert not torch.equal(other.compress_layer(inputs).sources[0], kept)
    hits = torch.zeros(length)
    for seed in range(200):
        draw = RandomEviction(budget=0.25, seed=seed)
        draw.begin(layout, num_layers=1)
        hits[draw.compress_layer(inputs).sources[0]] += 1
    assert hits.min() > 0.25 * 200 * 0.5 and hits.max() < 0.25 * 200 * 1.6  # every position, evenly


def test_random_eviction_needs_the_prompt_layout_first(layer_inputs_factory) -> None:
    keys = _noise(2, 12, D)
    inputs = layer_inputs_factory(_noise(4, 12, D), keys, keys, TokenLayout.text(12))
    with pytest.raises(ValueError, match="layout"):
        RandomEviction(budget=0.5).compress_layer(inputs)
    policy = RandomEviction(budget=0.5)
    policy.begin(TokenLayout.text(20), num_layers=1)
    with pytest.raises(ValueError, match="layout"):
        policy.compress_layer(inputs)


@pytest.mark.parametrize(
    ("kernel", "extra", "expected"), [(1, 2, {7, 19}), (5, 10, {5, 6, 7, 8, 9, 17, 18, 19, 20, 21})]
)
def test_snapkv_keeps_planted_tokens_the_window_attends_to(
    layer_inputs_factory, kernel, extra, expected
) -> None:
    length, window = 40, 8
    u = _unit(1)
    keys = _noise(1, length, D, seed=2)
    keys[0, [7, 19]] = u * 4
    queries = _noise(2, length, D, seed=3)
    queries[:, -window:] = u * 4
    inputs = layer_inputs_factory(queries, keys, keys.clone(), TokenLayout.text(length))
    result = SnapKV(budget=window + extra, window=window, kernel=kernel).compress_layer(inputs)
    kept = set(result.sources[0].tolist())
    assert kept == expected | set(range(length - window, length))


def test_h2o_keeps_heavy_hitters_and_recent(layer_inputs_factory) -> None:
    length = 30
    weights = torch.tril(torch.ones(length, length))
    weights[:, 3] *= 20
    weights[:, 11] *= 10
    weights = torch.tril(weights)
    weights = (weights / weights.sum(-1, keepdim=True)).expand(2, -1, -1)
    keys = _noise(1, length, D)
    inputs = layer_inputs_factory(_noise(2, length, D), keys, keys, TokenLayout.text(length))
    inputs.attention_weights = weights
    result = H2O(budget=8, recent_fraction=0.5).compress_layer(inputs)
    kept = set(result.sources[0].tolist())
    assert {3, 11, 26, 27, 28, 29} <= kept and len(kept) == 8
    inputs.attention_weights = None
    with pytest.raises(ValueError, match="attention_weights"):
        H2O(budget=8).compress_layer(inputs)


def test_adakv_gives_dispersed_heads_more_tokens(layer_inputs_factory) -> None:
    length = 40
    u = _unit(4)
    keys = _noise(2, length, D, seed=5)
    keys[0, [3, 9]] = u * 6
    queries = _noise(2, length, D, seed=6, scale=0.01)
    queries[0, -4:] = u * 6  # head 0 (KV head 0) concentrates on two tokens; head 1 is uniform
    inputs = layer_inputs_factory(queries, keys, keys.clone(), TokenLayout.text(length))
    result = AdaKV(budget=10, window=4, kernel=1, alpha=0.2).compress_layer(inputs)
    counts = result.counts()
    assert sum(counts) == 20 and counts[0] < counts[1]
    assert counts[0] >= 4 and {3, 9} <= set(result.sources[0].tolist())


def test_pyramidkv_layer_budgets_shrink_with_depth(layer_inputs_factory) -> None:
    length, num_layers = 60, 4
    keys = _noise(1, length, D)
    counts = []
    for layer in range(num_layers):
        inputs = layer_inputs_factory(
            _noise(2, length, D, seed=layer),
            keys,
            keys,
            TokenLayout.text(length),
            layer_idx=layer,
            num_layers=num_layers,
        )
        counts.append(PyramidKV(budget=20, window=4).compress_layer(inputs).counts()[0])
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert sum(counts) == 80


def test_look_m_is_text_prior_and_merges_every_evicted_token(layer_inputs_factory) -> None:
    layout = TokenLayout.concat([TokenLayout.text(5), TokenLayout.image(3, 4), TokenLayout.text(5)])
    length = len(layout)
    keys = _noise(2, length, D, scale=1.0)
    inputs = layer_inputs_factory(_noise(2, length, D, seed=1), keys, keys.clone(), layout)
    result = LookM(budget=14, window=4).compress_layer(inputs)
    text = set(torch.nonzero(layout.mask(Modality.TEXT)).flatten().tolist())
    for h in range(2):
        assert text <= set(result.sources[h].tolist())
        assert int(result.merged[h].sum()) == length - 14
        untouched = result.merged[h] == 0
        torch.testing.assert_close(result.keys[h][untouched], keys[h, result.sources[h][untouched]])


def _madakv_inputs(layer_inputs_factory, layer_idx=0, num_layers=1, state=None):
    layout = TokenLayout.concat([TokenLayout.text(10), TokenLayout.image(4, 5), TokenLayout.text(10)])
    length = len(layout)
    image, text = _unit(10), _unit(11)
    keys = _noise(2, length, D, seed=12)
    keys[:, layout.mask(Modality.IMAGE)] += image * 3
    keys[:, :10] += text * 3
    queries = _noise(2, length, D, seed=13)
    queries[0, -8:] = image * 3  # KV head 0 prefers the image
    queries[1, -8:] = text * 3  # KV head 1 prefers text
    return layer_inputs_factory(
        queries, keys, keys.clone(), layout, layer_idx=layer_idx, num_layers=num_layers, state=state
    ), layout


def test_madakv_gives_more_budget_to_the_modality_a_head_attends_to(layer_inputs_factory) -> None:
    inputs, layout = _madakv_inputs(layer_inputs_factory)
    result = MadaKV(budget=0.5, window=8, use_hcc=False).compress_layer(inputs)
    image_kept = [int(layout.mask(Modality.IMAGE)[s].sum()) for s in result.sources]
    assert image_kept[0] >= 10 and image_kept[1] <= 2
    assert result.counts() == [20, 20]
    plain = MadaKV(budget=0.5, window=8, use_hcc=False, use_mpa=False).compress_layer(inputs)
    assert plain.counts() == [20, 20]


def test_madakv_hcc_moves_budget_across_layers_as_the_formula_says(layer_inputs_factory) -> None:
    num_layers, state, policy = 3, {}, MadaKV(budget=0.5, window=8, theta=0.9)
    counts = []
    for layer in range(num_layers):
        inputs, layout = _madakv_inputs(layer_inputs_factory, layer, num_layers, state)
        counts.append(policy.compress_layer(inputs).counts())
        if layer == 0:
            psi = inputs.window_scores(window_indices(len(layout), 8))
            demand = sum(hcc_demand(psi, layout.mask(m), 0.9) for m in (Modality.TEXT, Modality.IMAGE))
            assert state["demand_history"][0] == demand.tolist()
    phi0, phi1 = state["phi_history"][:2]
    total, length = 20 * num_layers, 40
    assert phi0 == 20
    # Each head of layer 0 keeps its demand, clamped to [window, min(2 phi, length, affordable)].
    cap = min(2 * phi0, length, total - 8 * (num_layers - 1))
    assert counts[0] == [min(max(d, 8), cap) for d in state["demand_history"][0]]
    assert counts[0][0] != counts[0][1]  # the heads attend differently, so their demands differ
    imbalance = sum(counts[0]) / 2 - phi0
    expected = max(8, min(phi0 - imbalance / (num_layers - 1), length, total - sum(counts[0]) / 2 - 8))
    assert phi1 == round(expected)
    mean_kept = [sum(c) / len(c) for c in counts]
    assert sum(mean_kept) <= total


def _flowmm_inputs(layer_inputs_factory):
    layout = TokenLayout.concat([TokenLayout.text(6), TokenLayout.image(3, 4), TokenLayout.text(10)])
    length = len(layout)
    shared = _unit(20)
    keys = _noise(2, length, D, seed=21, scale=1.0)
    keys[:, layout.mask(Modality.IMAGE)] = shared * 2 + _noise(2, 12, D, seed=22, scale=0.3)
    keys[:, :6] = shared * 2 + _noise(2, 6, D, seed=23, scale=0.3)
    queries = _noise(4, length, D, seed=24, scale=1.0)
    return layer_inputs_factory(queries, keys, keys.clone(), layout), layout


@pytest.mark.parametrize("theta", [0.0, 1.0])
def test_flowmm_gate_and_protected_pivots(layer_inputs_factory, theta) -> None:
    inputs, layout = _flowmm_inputs(layer_inputs_factory)
    policy = FlowMM(budget=12, window=8, theta=theta, protect_quantile=0.75, min_similarity=-1.0)
    result = policy.compress_layer(inputs)
    state = inputs.state
    rho = state["rho"][0]
    assert 0.0 < rho < 1.0
    assert state["cross_modal"][0] == (rho > theta)
    importance = inputs.window_scores(window_indices(len(layout), 8))
    modality = layout.modality
    saw_cross = False
    for h, pairs in enumerate(state["merge_pairs"][0]):
        merged = pairs[pairs[:, 1] >= 0]
        protected = importance[h] > state["tau"][0][h]
        assert not protected[merged[:, 1]].any()  # never merged into a protected pivot
        kept = result.sources[h]
        assert protected[kept].any()
        same = modality[merged[:, 0]] == modality[merged[:, 1]]
        if not state["cross_modal"][0]:
            assert same.all()
        saw_cross |= bool((~same).any())
        assert int(result.merged[h].sum()) == merged.shape[0]
    assert saw_cross == state["cross_modal"][0]


def _acckv_inputs(layer_inputs_factory):
    layout = TokenLayout.concat(
        [TokenLayout.text(4), TokenLayout.video(2, 2, 3), TokenLayout.audio(12), TokenLayout.text(8)]
    )
    length = len(layout)
    v_dir, a_dir = _unit(30), _unit(31)
    a_dir = a_dir - (a_dir @ v_dir) * v_dir
    a_dir = a_dir / a_dir.norm()
    keys = _noise(1, length, D, seed=32)
    video = torch.nonzero(layout.mask(Modality.VIDEO)).flatten()
    audio = torch.nonzero(layout.mask(Modality.AUDIO)).flatten()
    misaligned, aligned = audio[:3], audio[3:]
    keys[0, video] += v_dir * 2
    keys[0, aligned] += v_dir * 2  # audio whose keys look like video keys
    keys[0, misaligned] += a_dir * 2
    queries = _noise(2, length, D, seed=33)
    queries[:, -8:] = v_dir * 3  # the question attends to video -> video is high priority
    queries[:, audio] = a_dir * 4  # audio rows attend to the misaligned audio tokens
    values = _noise(1, length, D, seed=34, scale=1.0)
    return layer_inputs_factory(queries, keys, values, layout), layout, misaligned, aligned


def test_acckv_calibration_keeps_aligned_low_priority_tokens_first_and_the_whole_budget(
    layer_inputs_factory,
) -> None:
    inputs, layout, misaligned, aligned = _acckv_inputs(layer_inputs_factory)
    policy = AccKV(budget=26, window=8, tau=0.6, merge=False)
    result = policy.compress_layer(inputs)
    assert inputs.state["high_priority"][0] == "video"
    weights = inputs.state["weights"][0]
    assert weights["video"] > weights["audio"] and weights["video"] + weights["audio"] == pytest.approx(1.0)
    kept = set(result.sources[0].tolist())
    assert len(kept) == 26  # the slots calibration frees are refilled
    audio_kept = kept & set(torch.nonzero(layout.mask(Modality.AUDIO)).flatten().tolist())
    assert audio_kept  # the low-priority modality is never wiped
    assert audio_kept <= set(aligned.tolist()) or set(aligned.tolist()) <= audio_kept  # aligned first
    without = AccKV(budget=26, window=8, tau=0.6, merge=False, calibrate=False).compress_layer(inputs)
    audio = set(torch.nonzero(layout.mask(Modality.AUDIO)).flatten().tolist())
    assert len(set(without.sources[0].tolist()) & audio) == len(audio_kept)  # which audio, not how much
    keys = inputs.keys[0]
    video = torch.nonzero(layout.mask(Modality.VIDEO)).flatten()
    alignment = alignment_scores(keys[torch.cat([misaligned, aligned])], keys[video], policy.align_k)
    assert bool((alignment[:3] < 0.6).all()) and bool((alignment[3:] >= 0.6).all())  # the premise
    # scores that favour the misaligned tokens: calibration still ranks every aligned one above them
    scores = torch.zeros(len(layout))
    scores[misaligned] = 10.0
    scores[aligned] = torch.linspace(1.0, 2.0, aligned.numel())
    ranked = policy._aligned_first(scores, keys, torch.cat([misaligned, aligned]), video)
    assert float(ranked[aligned].min()) > float(ranked[misaligned].max())
    assert torch.equal(ranked[aligned].argsort(), scores[aligned].argsort())  # order kept among aligned


def test_acckv_never_merges_audio_into_video(layer_inputs_factory) -> None:
    inputs, layout, _, _ = _acckv_inputs(layer_inputs_factory)
    policy = AccKV(budget=30, window=8, calibrate=False, audio_steps_per_unit=4, scoring="window")
    result = policy.compress_layer(inputs)
    units = layout.unit_ids(4)
    sources, merged, keys = result.sources[0], result.merged[0], result.keys[0]
    plain = set(sources[merged == 0].tolist())
    assert int((merged > 0).sum()) >= 2
    for entry in torch.nonzero(merged > 0).flatten().tolist():
        unit = units[sources[entry]]
        members = [i for i in torch.nonzero(units == unit).flatten().tolist() if i not in plain]
        assert len(members) == int(merged[entry])
        assert len({int(layout.modality[i]) for i in members}) == 1
        torch.testing.assert_close(keys[entry], inputs.keys[0, members].mean(0))
    assert len(sources) <= 30


def test_purekv_deep_layers_use_low_layer_attention_times_value_norm(layer_inputs_factory) -> None:
    length, window, n_keep = 40, 6, 14
    layout = TokenLayout.text(length)
    state: dict = {}
    policy = PureKV(budget=n_keep, scoring_layer=0, n_sinks=2, window=window)
    low = layer_inputs_factory(
        _noise(4, length, D, seed=40, scale=1.0),
        _noise(2, length, D, seed=41, scale=1.0),
        _noise(2, length, D, seed=42),
        layout,
        layer_idx=0,
        num_layers=2,
        state=state,
    )
    policy.compress_layer(low)
    rows = window_indices(length, window)
    probs = rows_attention(
        low.hidden_states.view(1, length, 4, D).transpose(1, 2)[:, :, rows], low.keys[None], rows, D**-0.5
    )
    low_scores = gqa_mean(probs.sum(dim=2), 2)[0]
    torch.testing.assert_close(state["clie_scores"], low_scores, atol=1e-5, rtol=1e-5)
    high_values = _noise(2, length, D, seed=43, scale=1.0)
    high = layer_inputs_factory(
        _noise(4, length, D, seed=44),
        _noise(2, length, D, seed=45),
        high_values,
        layout,
        layer_idx=1,
        num_layers=2,
        state=state,
    )
    result = policy.compress_layer(high)
    expected_scores = low_scores * high_values.norm(dim=-1)
    forced = torch.zeros(length, dtype=torch.bool)
    forced[:2] = True
    forced[rows] = True
    expected = topk_with_forced(expected_scores, n_keep, forced)
    for h in range(2):
        assert result.sources[h].tolist() == expected[h].tolist()


def test_observation_rows_are_the_question_window_or_the_tail_plus_strided_rows() -> None:
    question = TokenLayout.concat([TokenLayout.text(6), TokenLayout.video(2, 3, 3), TokenLayout.text(5)])
    observed = observation_rows(question, 32)
    assert observed.rows.tolist() == list(range(24, 29))  # a short question does not reach the video
    assert observed.forced.nonzero().flatten().tolist() == list(range(24, 29)) and not observed.spread
    assert observation_rows(question, 4).rows.tolist() == [25, 26, 27, 28]
    assert observation_rows(TokenLayout.text(50), 32).rows.tolist() == list(range(18, 50))
    closed = TokenLayout.concat([TokenLayout.text(20), TokenLayout.audio(100), TokenLayout.video(4, 5, 5)])
    closed.modality[-1] = int(Modality.TEXT)  # a closing marker inside the video segment, e.g. </video>
    observed = observation_rows(closed, 16)
    assert observed.spread
    assert observed.forced.nonzero().flatten().tolist() == list(range(204, 220))  # the tail is kept
    strided = observed.rows[observed.rows < 204]
    assert 10 <= strided.numel() <= 16  # the 16 strided rows, less those inside the tail
    gaps = strided.diff()
    assert int(gaps.min()) >= 13 and int(gaps.max()) <= 14  # evenly spread: every segment seen
    segments = set(closed.segment[observed.rows].tolist())
    assert segments == {0, 1, 2}
    empty = observation_rows(TokenLayout.text(0), 32)
    assert empty.rows.numel() == 0 and empty.forced.numel() == 0
