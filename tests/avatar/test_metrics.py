"""Metrics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trillium.avatar.core import best_lag_correlation, lip_sync_correlation, lip_vertex_error, psnr, ssim


def test_psnr_of_known_mse() -> None:
    target = torch.zeros(8, 8, 3)
    assert float(psnr(target + 0.1, target)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert float(psnr(target + 10.0, target, data_range=255.0)) == pytest.approx(
        10 * math.log10(255.0**2 / 100.0), abs=1e-4
    )


def test_ssim_identical_is_one_and_constant_images_follow_the_formula() -> None:
    image = torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(0))
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
    a, b = 0.2, 0.7
    c1 = (0.01) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # zero variance: only the luminance term
    got = ssim(torch.full((16, 16, 1), a), torch.full((16, 16, 1), b))
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_ssim_drops_with_noise_and_batches() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 32, 32, 3, generator=g)
    noisy = (image + 0.2 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    value = float(ssim(noisy, image))
    assert 0.0 < value < 0.9
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))


def test_lip_sync_correlation_matches_numpy() -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.rand(50, generator=g, dtype=torch.float64)
    predicted = 0.5 * target + 0.1 * torch.rand(50, generator=g, dtype=torch.float64)
    expected = np.corrcoef(predicted.numpy(), target.numpy())[0, 1]
    assert float(lip_sync_correlation(predicted, target)) == pytest.approx(expected, abs=1e-12)
    assert float(lip_sync_correlation(-target, target)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        lip_sync_correlation(torch.ones(5), target[:5])


def test_best_lag_recovers_a_known_delay() -> None:
    t = torch.arange(200, dtype=torch.float64)
    target = torch.sin(t / 7) + 0.3 * torch.sin(t / 3)
    predicted = torch.roll(target, 4)  # prediction 4 frames late
    lag, r = best_lag_correlation(predicted, target, max_lag=8)
    assert lag == 4 and float(r) > 0.99


def test_lip_vertex_error_by_hand() -> None:
    target = torch.zeros(2, 5, 3)
    predicted = target.clone()
    predicted[0, 1] = torch.tensor([0.3, 0.4, 0.0])  # 0.5 on a lip vertex
    predicted[0, 4] = torch.tensor([9.0, 0.0, 0.0])  # not a lip vertex: ignored
    predicted[1, 2] = torch.tensor([0.0, 0.0, 0.1])
    predicted[1, 1] = torch.tensor([0.0, 0.0, 0.05])  # max per frame is 0.1
    lips = torch.tensor([1, 2, 3])
    assert float(lip_vertex_error(predicted, target, lips)) == pytest.approx((0.5 + 0.1) / 2)
