"""Fitting bound Gaussians to multi-view images: losses, regularisers, a tiny fit, the fit CLI."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from trillium.avatar.core import load_asset, ssim
from trillium.avatar.core.fit_cli import main as fit_main
from trillium.avatar.core.fitting import (
    FitConfig,
    d_ssim,
    densify,
    evaluate,
    fit,
    init_gaussians,
    photometric_loss,
    position_regulariser,
    scale_regulariser,
    separable_ssim,
    synthetic_subject,
)


def test_d_ssim_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(20, 20, 3, generator=g)
    assert abs(float(d_ssim(image, image.clone()))) < 1e-6
    noisy = (image + 0.1 * torch.randn(20, 20, 3, generator=g)).clamp(0, 1)
    assert float(d_ssim(noisy, image)) > 0.01


def test_separable_ssim_matches_reference_metric():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 24, 30, 3, generator=g)
    b = (a + 0.2 * torch.randn(2, 24, 30, 3, generator=g)).clamp(0, 1)
    torch.testing.assert_close(separable_ssim(a, b), ssim(a, b), atol=1e-5, rtol=0)


def test_photometric_loss_weights_l1_and_d_ssim():
    a, b = torch.rand(16, 16, 3), torch.rand(16, 16, 3)
    l1 = (a - b).abs().mean()
    torch.testing.assert_close(photometric_loss(a, b, 0.0), l1)
    torch.testing.assert_close(photometric_loss(a, b, 0.2), 0.8 * l1 + 0.2 * d_ssim(a, b))


def test_position_regulariser_penalises_only_means_outside_the_unit_ball():
    inside = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.9, 0.0]])
    assert float(position_regulariser(inside)) == 0.0
    outside = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(position_regulariser(outside), torch.tensor(1.0))


def test_scale_regulariser_penalises_only_scales_above_threshold():
    small = torch.log(torch.tensor([[0.1, 0.5, 0.59]]))
    assert float(scale_regulariser(small)) == 0.0
    large = torch.log(torch.tensor([[0.9, 1.0, 0.1], [0.1, 0.1, 0.1]]))
    torch.testing.assert_close(scale_regulariser(large), torch.tensor(0.25), atol=1e-6, rtol=0)


def test_densify_adds_gaussians_with_valid_parents():
    gaussians = init_gaussians(20, per_triangle=2, generator=torch.Generator().manual_seed(0))
    grad = torch.zeros(40)
    grad[:5] = 1.0
    grad[30] = 1.0
    out = densify(gaussians, grad, FitConfig(densify_grad_threshold=0.5, densify_scale_threshold=0.6))
    assert len(out) == 40 + 6  # local scale 0.71 > 0.6: each of the 6 is split into 2 children
    assert set(out.parents.tolist()) == set(range(20))
    assert int((out.parents == gaussians.parents[30]).sum()) == 3
    cloned = densify(gaussians, grad, FitConfig(densify_grad_threshold=0.5, densify_scale_threshold=1.0))
    assert len(cloned) == 46
    torch.testing.assert_close(cloned.local_means[40:], gaussians.local_means[[0, 1, 2, 3, 4, 30]])


def test_tiny_fit_improves_held_out_psnr():
    subject = synthetic_subject(size=24, num_train=3, num_held_out=2, subdivisions=1, seed=0)
    initial = init_gaussians(subject.rig.faces.shape[0], 2, generator=torch.Generator().manual_seed(1))
    before = evaluate(initial, subject.frames, subject.held_out)["psnr"]
    config = FitConfig(iterations=120, eval_every=60, progress=False)
    result = fit(initial, subject.frames, subject.train, config, subject.held_out)
    after = result.history[-1]["held_out_psnr"]
    assert after > before + 4.0
    assert result.history[-1]["train_psnr"] > result.history[0]["train_psnr"] - 0.5
    assert [row["step"] for row in result.history] == [60, 120]


def test_fit_cli_synthetic_writes_a_loadable_asset(tmp_path):
    out = tmp_path / "avatar.safetensors"
    argv = ["--synthetic", "--out", str(out), "--iterations", "20", "--size", "16", "--subdivisions", "1",
            "--num-views", "2", "--held-out", "1", "--per-triangle", "1", "--no-progress"]  # fmt: skip
    assert fit_main(argv) == 0
    asset = load_asset(out)
    assert len(asset.gaussians) == asset.template.num_faces == 80
    assert asset.extra["fit"]["history"][-1]["step"] == 20
    assert asset.blendshapes is not None


def test_fit_cli_reads_a_views_directory(tmp_path):
    subject = synthetic_subject(size=20, num_train=3, num_held_out=1, subdivisions=1)
    views = tmp_path / "views"
    views.mkdir()
    save_file(
        {
            "images": (subject.train.images * 255).round().to(torch.uint8),
            "viewmats": subject.train.viewmats.contiguous(),
            "Ks": subject.train.Ks.contiguous(),
            "template.vertices": subject.rig.template.contiguous(),
            "template.faces": subject.rig.faces.contiguous(),
        },
        str(views / "views.safetensors"),
    )
    out = tmp_path / "fitted.safetensors"
    argv = ["--views", str(views), "--out", str(out), "--iterations", "10", "--size", "16",
            "--held-out", "1", "--per-triangle", "1", "--no-progress"]  # fmt: skip
    assert fit_main(argv) == 0
    asset = load_asset(out)
    assert asset.template.name == "embedded"
    assert "held_out_psnr" in asset.extra["fit"]["history"][-1]
    with pytest.raises(ValueError, match="views"):
        fit_main(["--views", str(tmp_path / "missing"), "--out", str(out)])


def test_fit_densifies_periodically_and_keeps_parents():
    subject = synthetic_subject(size=16, num_train=2, num_held_out=1, subdivisions=0)
    initial = init_gaussians(20, 1, generator=torch.Generator().manual_seed(0))
    config = FitConfig(iterations=20, densify_every=5, densify_until=0.6, densify_grad_threshold=0.0,
                       eval_every=0, progress=False)  # fmt: skip
    result = fit(initial, subject.frames, subject.train, config)
    assert 20 < len(result.gaussians) <= 20 * 2**2
    assert int(result.gaussians.parents.max()) < 20
    assert result.history[-1]["num_gaussians"] == len(result.gaussians)


def test_fit_demo_quick_writes_history_and_figure(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "avatar" / "fit_demo.py"
    spec = importlib.util.spec_from_file_location("fit_demo", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "avatar-fit.json").read_text())
    history = payload["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == payload["meta"]["iterations"]
    assert history[-1]["held_out_psnr"] > history[0]["held_out_psnr"]
    assert (tmp_path / "avatar-fit.png").stat().st_size > 0
