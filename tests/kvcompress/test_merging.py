"""Merging: LOOK-M pivot merge, FlowMM eligibility, AccKV unit averages and calibration."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.merging import (
    average_units,
    cross_calibration_scores,
    flow_eligibility,
    merge_into_pivots,
    nearest_pivots,
    protection_threshold,
)


def test_pivot_merge_formula() -> None:
    pivots_k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pivots_v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    src_k = torch.tensor([[2.0, 0.1], [4.0, -0.1], [0.1, 3.0]])
    src_v = torch.tensor([[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]])
    assignment = nearest_pivots(src_k, pivots_k)
    assert assignment.tolist() == [0, 0, 1]
    k, v, counts = merge_into_pivots(pivots_k, pivots_v, src_k, src_v, assignment)
    # pivot 0: mean((k_p + k*) / 2) over its two sources = (k* + mean k_p) / 2
    torch.testing.assert_close(k[0], (pivots_k[0] + src_k[:2].mean(0)) / 2)
    torch.testing.assert_close(v[1], (pivots_v[1] + src_v[2]) / 2)
    assert counts.tolist() == [2, 1]
    eligible = torch.tensor([[False, True], [False, False], [True, True]])
    assert nearest_pivots(src_k, pivots_k, eligible).tolist() == [1, -1, 1]
    k, _, counts = merge_into_pivots(pivots_k, pivots_v, src_k, src_v, torch.tensor([-1, -1, -1]))
    torch.testing.assert_close(k, pivots_k)
    assert counts.tolist() == [0, 0]


def test_flow_eligibility_gate_and_protection() -> None:
    importance = torch.tensor([0.9, 0.1, 0.2])
    tau = protection_threshold(importance, 0.5)
    assert tau == pytest.approx(0.2)
    src_mod = torch.tensor([0, 1])
    piv_mod = torch.tensor([0, 1, 0])
    intra = flow_eligibility(src_mod, piv_mod, importance, cross_modal=False, tau=tau)
    assert intra.tolist() == [[False, False, True], [False, True, False]]
    cross = flow_eligibility(src_mod, piv_mod, importance, cross_modal=True, tau=tau)
    assert cross.tolist() == [[False, True, True], [False, True, True]]


def test_unit_average_and_calibration() -> None:
    keys = torch.arange(12.0).view(6, 2)
    values = -keys
    k, v, first = average_units(keys, values, torch.tensor([1, 2, 4, 5]), torch.tensor([7, 7, 3, 3]))
    torch.testing.assert_close(k, torch.stack([keys[4:6].mean(0), keys[1:3].mean(0)]))
    torch.testing.assert_close(v, -k)
    assert first.tolist() == [4, 1]
    low = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    high = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    c = cross_calibration_scores(low, high)
    torch.testing.assert_close(c, torch.tensor([(1 + 2**-0.5) / 2, (0 + 2**-0.5) / 2, (-1 - 2**-0.5) / 2]))
