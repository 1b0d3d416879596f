"""FedCFA's pieces: saliency, masks, counterfactual latents and targets, FDC loss, chunk means, client."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from trillium.federated.core import (
    FedCFA,
    LocalTrainConfig,
    ModelSpec,
    build_model,
    make_client_hooks,
    train_local,
)
from trillium.federated.core.data import ArrayDataset
from trillium.federated.core.strategies.counterfactual import (
    chunk_means,
    counterfactual_latents,
    factor_masks,
    factor_saliency,
    fdc_loss,
)
from trillium.federated.core.strategies.fedcfa import top_k_for


def test_saliency_of_a_linear_decoder_is_its_true_class_weights() -> None:
    decoder = nn.Linear(4, 3)
    z = torch.randn(2, 4)
    y = torch.tensor([2, 0])
    s = factor_saliency(decoder, z, y)
    # ∂/∂z_b [(1/B) Σ logit_{y_b}] = W[y_b] / B (signed)
    torch.testing.assert_close(s, decoder.weight.detach()[y] / 2)


def test_saliency_averages_over_spatial_positions() -> None:
    conv = nn.Conv2d(3, 2, 1)
    decoder = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(2))
    z = torch.randn(2, 3, 2, 2)
    decoder(z)
    s = factor_saliency(decoder, z, torch.tensor([0, 1]))
    assert s.shape == (2, 3)
    z_req = z.clone().requires_grad_(True)
    decoder(z_req).gather(1, torch.tensor([[0], [1]])).mean().backward()
    torch.testing.assert_close(s, z_req.grad.mean(dim=(2, 3)))


def test_masks_zero_the_smallest_and_largest_channels() -> None:
    saliency = torch.tensor([[0.5, -2.0, 3.0, 0.1, 1.0], [9.0, 8.0, -7.0, 6.0, 0.0]])
    m_p, m_n = factor_masks(saliency, top_k=2)
    assert m_p.tolist() == [[1, 0, 1, 0, 1], [1, 1, 0, 1, 0]]  # least salient swapped out
    assert m_n.tolist() == [[1, 1, 0, 1, 0], [0, 0, 1, 1, 1]]  # most salient swapped out
    with pytest.raises(ValueError, match="top_k"):
        factor_masks(saliency, top_k=5)


def test_counterfactual_latents_swap_channels_and_mix_targets() -> None:
    z = torch.zeros(1, 4, 2, 2)
    z_g = torch.ones(1, 4, 2, 2)
    m_p = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    m_n = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    y_g = torch.tensor([[0.0, 0.2, 0.8]])
    z_p, z_n, y_n = counterfactual_latents(z, z_g, m_p, m_n, y_onehot=y, y_global=y_g)
    assert z_p[0, :, 0, 0].tolist() == [0, 1, 0, 0]
    assert z_n[0, :, 1, 1].tolist() == [1, 0, 0, 0]
    torch.testing.assert_close(y_n, 0.75 * y + 0.25 * y_g)
    assert float(y_n.sum()) == pytest.approx(1.0)


def test_paper_setting_mixes_targets_0625_and_0375() -> None:
    assert top_k_for(64, 24 / 64) == 24
    m_p, m_n = factor_masks(torch.randn(3, 64), top_k=24)
    y, y_g = torch.eye(2)[[0, 0, 0]], torch.eye(2)[[1, 1, 1]]
    _, _, y_n = counterfactual_latents(
        torch.zeros(3, 64), torch.ones(3, 64), m_p, m_n, y_onehot=y, y_global=y_g
    )
    torch.testing.assert_close(y_n, torch.tensor([[0.625, 0.375]] * 3))


def test_fdc_loss_is_near_zero_for_independent_factors_and_one_for_copies() -> None:
    gen = torch.Generator().manual_seed(0)
    independent = torch.randn(4096, 6, generator=gen)
    assert float(fdc_loss(independent)) < 1e-2
    base = torch.randn(256, 1, generator=gen)
    assert float(fdc_loss(base.repeat(1, 5))) == pytest.approx(1.0, abs=1e-3)
    assert float(fdc_loss(torch.randn(1, 6))) == 0.0


def test_fdc_gradient_matches_finite_differences_and_decorrelates() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(16, 3, 2, 2, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(fdc_loss, (z.requires_grad_(True),))
    mixed = torch.randn(64, 1, generator=gen) + 0.3 * torch.randn(64, 4, generator=gen)
    f = mixed.clone().requires_grad_(True)
    before = fdc_loss(f)
    before.backward()
    after = fdc_loss((f - 0.5 * f.grad).detach())
    assert float(after) < float(before.detach())


def test_chunk_means_are_chunk_averages_with_soft_labels() -> None:
    x = torch.arange(10, dtype=torch.float32)[:, None]
    y = torch.tensor([0, 1] * 5)
    mean_x, mean_y = chunk_means(
        x, y, num_classes=3, chunk_size=4, generator=torch.Generator().manual_seed(0)
    )
    assert mean_x.shape == (3, 1) and mean_y.shape == (3, 3)
    torch.testing.assert_close(mean_y.sum(dim=1), torch.ones(3))
    sizes = torch.tensor([4.0, 4.0, 2.0])
    assert float((mean_x[:, 0] * sizes).sum()) == pytest.approx(45.0)  # chunks partition the data
    assert float((mean_y[:, 1] * sizes).sum()) == pytest.approx(5.0)


def _fedcfa_round(model, data, strategy: FedCFA, server_round: int):
    glob = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    instruction = strategy.configure_round(server_round, glob, ["c"])["c"]
    model.load_state_dict(instruction.weights)
    config = LocalTrainConfig.from_config(instruction.config)
    return train_local(model, data, config, make_client_hooks(instruction))


def test_fedcfa_client_uses_the_pool_only_after_round_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(40, 1, 8, 8, generator=gen), torch.randint(0, 3, (40,), generator=gen), 3)
    model = build_model(ModelSpec("cnn", (1, 8, 8), 3, factors=8, hidden=8), seed=0)
    strategy = FedCFA(mean_batch=16, local=LocalTrainConfig(batch_size=10))
    first = _fedcfa_round(model, data, strategy, 0)
    assert "ce_pos" not in first.metrics and "fdc" in first.metrics
    assert first.extras["mean_x"].shape == (3, 1, 8, 8) and first.extras["mean_y"].shape == (3, 3)
    strategy.aggregate(0, model.state_dict(), {"c": first})
    second = _fedcfa_round(model, data, strategy, 1)
    assert {"ce_pos", "ce_neg", "fdc"} <= set(second.metrics)


def test_fedcfa_counterfactual_terms_train_only_the_decoder() -> None:
    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(8, 5, generator=gen), torch.randint(0, 2, (8,), generator=gen), 2)
    model = build_model(ModelSpec("mlp", (5,), 2, factors=4, hidden=6), seed=0)
    strategy = FedCFA(loss_weights=(0.0, 5.0, 5.0), fdc=False)
    strategy.pool_x, strategy.pool_y = torch.randn(3, 5, generator=gen), torch.eye(2)[[0, 1, 1]]
    glob = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    hooks = make_client_hooks(strategy.configure_round(1, glob, ["c"])["c"])
    hooks.on_train_start(model, data)
    loss, _ = hooks.loss(model, data.x, data.y)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.encoder.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.decoder.parameters())


def test_fedcfa_needs_a_split_model() -> None:
    strategy = FedCFA()
    model = nn.Linear(3, 2)
    instruction = strategy.configure_round(0, OrderedDict(model.state_dict()), ["c"])["c"]
    data = ArrayDataset(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="SplitModel"):
        train_local(model, data, LocalTrainConfig(), make_client_hooks(instruction))


def test_noise_is_added_to_uploaded_means_only_when_asked() -> None:
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    clean, labels = chunk_means(x, y, 2, 5, generator=torch.Generator().manual_seed(0))
    noisy, noisy_labels = chunk_means(x, y, 2, 5, generator=torch.Generator().manual_seed(0), noise_std=1.0)
    assert torch.equal(labels, noisy_labels)
    assert float((noisy - clean).abs().mean()) > 0.3


def test_fedcfa_requires_explicit_opt_in_to_sharing() -> None:
    with pytest.raises(ValueError, match="share_mean_data"):
        FedCFA(share_mean_data=False)


def test_local_config_round_trips_through_scalars() -> None:
    config = LocalTrainConfig(lr=0.2, momentum=0.5, batch_size=7, epochs=2, seed=9)
    assert LocalTrainConfig.from_config(config.to_config()) == config
