"""Budget resolution, PyramidKV layers, AdaKV heads, modality splits and MadaKV HCC."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.budgets import (
    adaptive_head_selection,
    focusing_weights,
    hcc_demand,
    hcc_next_budget,
    proportional_split,
    pyramid_layer_budgets,
    resolve_budget,
    validate_budget,
)


def test_resolve_budget_fraction_and_count() -> None:
    assert resolve_budget(0.25, 100) == 25
    assert resolve_budget(1.0, 37) == 37
    assert resolve_budget(0.001, 50) == 1
    assert resolve_budget(10, 50) == 10
    assert resolve_budget(500, 50) == 50


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, 0, -3, True, "0.2", None, float("nan")])
def test_validate_budget_rejects(bad) -> None:
    with pytest.raises(ValueError, match="budget"):
        validate_budget(bad)


def test_pyramid_budgets_decrease_and_keep_the_total() -> None:
    budgets = pyramid_layer_budgets(40, 4, window=8, beta=20, capacity=200)
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
    assert sum(budgets) == 160
    prefix = 32
    assert budgets[0] == round(2 * prefix - prefix / 20) + 8 and budgets[-1] == round(prefix / 20) + 8
    capped = pyramid_layer_budgets(90, 3, window=5, capacity=100)
    assert max(capped) <= 100 and sum(capped) == 270


def test_adaptive_heads_give_more_to_dispersed_heads_with_a_floor() -> None:
    length = 20
    concentrated = torch.zeros(length)
    concentrated[:2] = 0.5
    dispersed = torch.full((length,), 1.0 / length)
    scores = torch.stack([concentrated, dispersed])
    kept = adaptive_head_selection(scores, per_head_budget=6, alpha=0.5)
    assert sum(k.numel() for k in kept) == 12
    assert kept[0].numel() == 3  # floor ceil(0.5 * 6) = 3: its two heavy tokens + one
    assert kept[1].numel() == 9
    assert set(kept[0].tolist()) >= {0, 1}
    forced = torch.zeros(length, dtype=torch.bool)
    forced[-2:] = True
    kept = adaptive_head_selection(scores, per_head_budget=6, alpha=0.0, forced=forced)
    assert all({18, 19} <= set(k.tolist()) for k in kept)


def test_proportional_split_water_fills_capacity() -> None:
    counts = proportional_split(torch.tensor([0.7, 0.3]), torch.tensor([100, 100]), 10)
    assert counts.tolist() == [7, 3]
    counts = proportional_split(torch.tensor([0.9, 0.1]), torch.tensor([4, 100]), 10)
    assert counts.tolist() == [4, 6]
    counts = proportional_split(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([5, 5, 0]), 4)
    assert int(counts.sum()) == 4 and counts[2] == 0
    assert focusing_weights({2: 3.0, 3: 1.0}) == {2: 0.75, 3: 0.25}
    assert focusing_weights({2: 0.0, 3: 0.0}) == {2: 0.5, 3: 0.5}


def test_hcc_demand_and_propagation_follow_the_formula() -> None:
    psi = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.05, 0.05, 0.9, 0.0]])
    member = torch.tensor([True, True, True, False])
    assert hcc_demand(psi, member, 0.9).tolist() == [3, 1]
    assert hcc_demand(psi, member, 0.5).tolist() == [1, 1]
    # phi^{l+1} = phi^l - K^l / (L - l): layer 1 of 4 (0-based 0), K = 6 -> 10 - 6 / 3 = 8
    nxt = hcc_next_budget(10.0, 6.0, 0, 4, minimum=2.0, maximum=50.0, total_budget=40.0, spent=10.0)
    assert nxt == pytest.approx(8.0)
    # savings are redistributed (negative K raises later budgets) within the total budget
    nxt = hcc_next_budget(10.0, -9.0, 0, 4, minimum=2.0, maximum=50.0, total_budget=40.0, spent=10.0)
    assert nxt == pytest.approx(13.0)
    capped = hcc_next_budget(10.0, -90.0, 2, 4, minimum=2.0, maximum=50.0, total_budget=40.0, spent=30.0)
    assert capped == pytest.approx(10.0)
