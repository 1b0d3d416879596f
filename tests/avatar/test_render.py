"""Renderers: fast paths held to the dense reference, and gsplat's compositing rules on hand-made scenes."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from trillium.avatar.core import gsplat_arguments, native_available, render
from trillium.avatar.core.projection import project_gaussians
from trillium.avatar.core.rasterize_native import rasterize_native
from trillium.avatar.core.rasterize_reference import rasterize_reference
from trillium.avatar.core.rasterize_torch import rasterize_tiled_torch

from .helpers import axis_camera, front_camera, random_scene

FAST_BACKENDS = [
    "torch",
    pytest.param("native", marks=pytest.mark.skipif(not native_available(), reason="no cc")),
]
ALL_BACKENDS = ["reference", *FAST_BACKENDS]
IDENTITY = torch.tensor([[1.0, 0.0, 0.0, 0.0]])


def single(mean, scale, opacity, color, dtype=torch.float32):
    """One isotropic Gaussian as render() arguments."""
    return (
        torch.tensor([mean], dtype=dtype),
        IDENTITY.to(dtype),
        torch.full((1, 3), scale, dtype=dtype),
        torch.tensor([opacity], dtype=dtype),
        torch.tensor([color], dtype=dtype),
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_single_gaussian_matches_analytic_2d_gaussian(backend: str) -> None:
    width, height, fx, z, s, o = 40, 30, 50.0, 2.0, 0.05, 0.8
    viewmat, K = axis_camera(fx, width, height)
    background = torch.tensor([0.2, 0.3, 0.4])
    out = render(
        *single([0.0, 0.0, z], s, o, [1.0, 0.5, 0.0]), viewmat, K, width, height, background, backend
    )

    var = (fx * s / z) ** 2 + 0.3  # projected variance plus gsplat's 0.3 px low-pass
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    r2 = (xs - width / 2) ** 2 + (ys - height / 2) ** 2
    alpha = torch.clamp(o * torch.exp(-0.5 * r2 / var), max=0.999)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    expected = alpha[..., None] * torch.tensor([1.0, 0.5, 0.0]) + (1 - alpha[..., None]) * background
    torch.testing.assert_close(out.rgb, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(out.alpha[..., 0], alpha, rtol=0, atol=2e-6)
    covered = alpha > 0
    torch.testing.assert_close(
        out.depth[..., 0][covered], torch.full_like(alpha[covered], z), rtol=1e-5, atol=0
    )
    assert out.meta["backend"] == backend


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    ("seed", "num", "width", "height"), [(0, 40, 37, 29), (1, 400, 64, 48), (2, 900, 80, 80)]
)
def test_fast_renderers_match_reference_on_random_scenes(backend, seed, num, width, height) -> None:
    scene = random_scene(num, seed)
    viewmat, K = front_camera(width, height)
    background = torch.tensor([0.1, 0.7, 0.3])
    args = (*scene.values(), viewmat, K, width, height, background)
    with torch.no_grad():
        ref = render(*args, backend="reference", depth_mode="accumulated")
        fast = render(*args, backend=backend, depth_mode="accumulated")
    if num >= 400:  # dense scenes saturate pixels, so the 1e-4 stop is exercised
        assert ref.alpha.max() > 0.99
    # stated tolerance: 1e-5 absolute on colour and alpha, 1e-5 relative on accumulated depth
    torch.testing.assert_close(fast.rgb, ref.rgb, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.alpha, ref.alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.depth, ref.depth, rtol=1e-5, atol=1e-5)


def test_float64_tiled_torch_and_reference_agree_to_1e_12() -> None:
    scene = random_scene(200, seed=5, dtype=torch.float64)
    viewmat, K = front_camera(48, 40, dtype=torch.float64)
    projected = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], viewmat, K, 48, 40
    )
    ref = rasterize_reference(projected, scene["colors"], 48, 40)
    tiled = rasterize_tiled_torch(projected, scene["colors"], 48, 40, chunk_size=16)
    for a, b in zip(ref, tiled):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_front_gaussian_occludes_back_one_regardless_of_input_order(backend: str) -> None:
    viewmat, K = axis_camera(40.0, 16, 16)
    front = single([0.0, 0.0, 2.0], 0.2, 0.9, [1.0, 0.0, 0.0])
    back = single([0.0, 0.0, 4.0], 0.4, 0.9, [0.0, 0.0, 1.0])
    outs = []
    for first, second in ((front, back), (back, front)):
        args = [torch.cat([a, b]) for a, b in zip(first, second)]
        outs.append(render(*args, viewmat, K, 16, 16, None, backend))
    torch.testing.assert_close(outs[0].rgb, outs[1].rgb)
    centre = outs[0].rgb[8, 8]
    # centre pixel (8.5, 8.5) is 0.5 px off both means; alpha_front = 0.9 exp(-sigma_front) etc.
    a_front = 0.9 * math.exp(-0.5 * 0.5 / ((40 * 0.2 / 2) ** 2 + 0.3))
    a_back = 0.9 * math.exp(-0.5 * 0.5 / ((40 * 0.4 / 4) ** 2 + 0.3))
    torch.testing.assert_close(
        centre, torch.tensor([a_front, 0.0, (1 - a_front) * a_back]), rtol=0, atol=1e-6
    )
    assert outs[0].depth[8, 8, 0] < 3.0  # expected depth pulled to the front


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_alpha_is_clamped_to_0999(backend: str) -> None:
    viewmat, K = axis_camera(40.0, 8, 8)
    out = render(*single([0.0, 0.0, 2.0], 5.0, 1.0, [1.0, 1.0, 1.0]), viewmat, K, 8, 8, None, backend)
    assert float(out.alpha.max()) == pytest.approx(0.999, abs=1e-7)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_alpha_below_1_over_255_is_skipped(backend: str) -> None:
    viewmat, K = axis_camera(40.0, 32, 8)
    opacity = 3.0 / 255  # peak above the threshold, tails below it
    out = render(*single([0.0, 0.0, 2.0], 0.3, opacity, [1.0, 1.0, 1.0]), viewmat, K, 32, 8, None, backend)
    var = (40 * 0.3 / 2) ** 2 + 0.3
    xs = torch.arange(32) + 0.5 - 16
    row = opacity * torch.exp(-0.5 * (xs**2 + 0.25) / var)
    expected = torch.where(row >= 1 / 255, row, torch.zeros_like(row))
    assert (expected == 0).any() and (expected > 0).any()
    torch.testing.assert_close(out.alpha[3, :, 0], expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_transmittance_stop_is_exclusive(backend: str) -> None:
    # three opaque layers: after the first T = 1e-3; the second would bring T to 1e-6 <= 1e-4,
    # so compositing stops *before* it and the second and third colours never appear.
    viewmat, K = axis_camera(40.0, 8, 8)
    layers = [
        single([0.0, 0.0, z], 1.0, 1.0, c) for z, c in ((2.0, [1, 0, 0]), (3.0, [0, 1, 0]), (4.0, [0, 0, 1]))
    ]
    args = [torch.cat(parts) for parts in zip(*layers)]
    background = torch.tensor([0.0, 0.0, 0.5])
    out = render(*args, viewmat, K, 8, 8, background, backend)
    torch.testing.assert_close(out.rgb[4, 4], torch.tensor([0.999, 0.0, 0.0005]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.alpha[4, 4, 0], torch.tensor(0.999), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_view_shows_background(backend: str) -> None:
    viewmat, K = axis_camera(40.0, 20, 12)
    background = torch.tensor([0.25, 0.5, 0.75])
    behind = single([0.0, 0.0, -3.0], 0.5, 0.9, [1.0, 0.0, 0.0])
    out = render(*behind, viewmat, K, 20, 12, background, backend)
    torch.testing.assert_close(out.rgb, background.expand(12, 20, 3))
    assert float(out.alpha.abs().max()) == 0.0
    black = render(*behind, viewmat, K, 20, 12, None, backend)
    assert float(black.rgb.abs().max()) == 0.0


def test_gradients_match_finite_differences_float64() -> None:
    dtype = torch.float64
    g = torch.Generator().manual_seed(3)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.05, 2.5], [-0.08, 0.04, 3.0]], dtype=dtype)
    quats = torch.randn(3, 4, generator=g, dtype=dtype)
    scales = torch.tensor([[0.08, 0.05, 0.06], [0.1, 0.07, 0.05], [0.12, 0.1, 0.1]], dtype=dtype)
    opacities = torch.tensor([0.6, 0.5, 0.7], dtype=dtype)
    colors = torch.rand(3, 3, generator=g, dtype=dtype)
    viewmat, K = axis_camera(30.0, 12, 10, dtype=dtype)
    background = torch.tensor([0.1, 0.2, 0.3], dtype=dtype)
    weights = torch.rand(10, 12, 5, generator=g, dtype=dtype)

    def loss(m, q, s, o, c):
        out = render(m, q, s, o, c, viewmat, K, 12, 10, background, "torch", depth_mode="accumulated")
        return (torch.cat([out.rgb, out.depth, out.alpha], -1) * weights).sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_auto_backend_choice() -> None:
    scene = random_scene(20, seed=0)
    viewmat, K = front_camera(16, 16)
    expected = "native" if native_available() else "torch"
    assert render(*scene.values(), viewmat, K, 16, 16).meta["backend"] == expected
    scene64 = {k: v.double() for k, v in scene.items()}
    out = render(*scene64.values(), viewmat.double(), K.double(), 16, 16)
    assert out.meta["backend"] == "torch" and out.rgb.dtype == torch.float64


@pytest.mark.skipif(not native_available(), reason="no C compiler")
@pytest.mark.parametrize(("seed", "num", "width", "height"), [(0, 30, 24, 20), (2, 600, 56, 48)])
def test_native_backward_matches_torch_autograd(seed, num, width, height) -> None:
    scene = random_scene(num, seed)
    viewmat, K = front_camera(width, height)
    background = torch.tensor([0.2, 0.3, 0.4])
    weights = torch.rand(height, width, 5, generator=torch.Generator().manual_seed(9))
    grads = {}
    for backend in ("torch", "native"):
        inputs = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
        out = render(
            *inputs.values(), viewmat, K, width, height, background, backend, depth_mode="accumulated"
        )
        (torch.cat([out.rgb, out.depth, out.alpha], -1) * weights).sum().backward()
        grads[backend] = {k: v.grad for k, v in inputs.items()}
    for name in scene:
        torch_grad, native_grad = grads["torch"][name], grads["native"][name]
        assert native_grad.abs().max() > 0, name
        # stated tolerance: 1e-5 of the largest gradient entry (float32 accumulation order differs)
        tolerance = 1e-5 * float(torch_grad.abs().max())
        torch.testing.assert_close(native_grad, torch_grad, rtol=0, atol=tolerance)


def test_sh_degree_zero_equals_plain_colours() -> None:
    scene = random_scene(50, seed=4)
    viewmat, K = front_camera(24, 24)
    sh0 = (scene["colors"] - 0.5) / 0.28209479177387814
    base = (scene["means"], scene["quats"], scene["scales"], scene["opacities"])
    plain = render(*base, scene["colors"], viewmat, K, 24, 24, backend="reference")
    from_sh = render(*base, sh0[:, None, :], viewmat, K, 24, 24, backend="reference", sh_degree=0)
    torch.testing.assert_close(from_sh.rgb, plain.rgb, rtol=0, atol=1e-6)


def test_antialiased_mode_dims_subpixel_gaussians() -> None:
    viewmat, K = axis_camera(40.0, 8, 8)
    tiny = single([0.0, 0.0, 2.0], 0.005, 0.9, [1.0, 1.0, 1.0])
    classic = render(*tiny, viewmat, K, 8, 8, None, "reference")
    aa = render(*tiny, viewmat, K, 8, 8, None, "reference", rasterize_mode="antialiased")
    var = (40 * 0.005 / 2) ** 2
    factor = math.sqrt(var * var / ((var + 0.3) * (var + 0.3)))
    torch.testing.assert_close(aa.alpha.max(), classic.alpha.max() * factor, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"means": torch.zeros(3, 2)}, "means"),
        ({"quats": torch.zeros(2, 4)}, "quats"),
        ({"opacities": torch.full((3,), 1.5)}, "opacities"),
        ({"means": torch.full((3, 3), float("nan"))}, "means contains NaN"),
        ({"scales": torch.full((3, 3), float("inf"))}, "scales contains NaN"),
        ({"colors": torch.zeros(3)}, "colors"),
        ({"viewmat": torch.eye(3)}, "viewmat"),
        ({"K": torch.eye(4)}, "K"),
        ({"width": 0}, "width"),
        ({"background": torch.zeros(4)}, "background"),
        ({"backend": "vulkan"}, "backend"),
        ({"backend": "gsplat"}, "CUDA"),
        ({"rasterize_mode": "fancy"}, "rasterize_mode"),
        ({"depth_mode": "median"}, "depth_mode"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change: dict, message: str) -> None:
    scene = random_scene(3, seed=0)
    viewmat, K = front_camera(8, 8)
    kwargs = {**scene, "viewmat": viewmat, "K": K, "width": 8, "height": 8, "background": None, **change}
    with pytest.raises(ValueError, match=message):
        render(**kwargs)


def test_gsplat_argument_mapping() -> None:
    scene = random_scene(5, seed=0)
    viewmat, K = front_camera(32, 24)
    background = torch.tensor([0.1, 0.2, 0.3])
    args = gsplat_arguments(
        *scene.values(), viewmat, K, 32, 24, background, rasterize_mode="antialiased", depth_mode="expected"
    )
    assert args["viewmats"].shape == (1, 4, 4) and torch.equal(args["viewmats"][0], viewmat)
    assert args["Ks"].shape == (1, 3, 3) and torch.equal(args["Ks"][0], K)
    assert args["backgrounds"].shape == (1, 3) and torch.equal(args["backgrounds"][0], background)
    assert args["means"] is scene["means"] and args["quats"] is scene["quats"]
    assert (args["width"], args["height"]) == (32, 24)
    assert args["packed"] is False and args["render_mode"] == "RGB+ED"
    assert args["eps2d"] == 0.3 and args["near_plane"] == 0.01 and args["tile_size"] == 16
    assert args["rasterize_mode"] == "antialiased" and args["camera_model"] == "pinhole"
    accumulated = gsplat_arguments(*scene.values(), viewmat, K, 32, 24, None, depth_mode="accumulated")
    assert accumulated["render_mode"] == "RGB+D" and accumulated["backgrounds"] is None
    # every key is a parameter of the pinned gsplat.rasterization (inspected, never called on CPU)
    gsplat = pytest.importorskip("gsplat")
    assert set(args) <= set(inspect.signature(gsplat.rasterization).parameters)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_matches_native_on_gpu() -> None:
    scene = random_scene(500, seed=7)
    viewmat, K = front_camera(64, 64)
    cpu = render(*scene.values(), viewmat, K, 64, 64, None, "torch")
    cuda = {k: v.cuda() for k, v in scene.items()}
    gpu = render(*cuda.values(), viewmat.cuda(), K.cuda(), 64, 64, None, "gsplat")
    torch.testing.assert_close(gpu.rgb.cpu(), cpu.rgb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_scene_and_multichannel_features(backend: str) -> None:
    viewmat, K = front_camera(20, 20)
    empty = render(
        torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 5),
        viewmat, K, 20, 20, torch.full((5,), 0.5), backend,
    )  # fmt: skip
    assert empty.rgb.shape == (20, 20, 5) and float((empty.rgb - 0.5).abs().max()) == 0.0
    scene = random_scene(200, seed=8)
    feats = torch.rand(200, 7, generator=torch.Generator().manual_seed(0))
    base = (scene["means"], scene["quats"], scene["scales"], scene["opacities"], feats, viewmat, K, 20, 20)
    with torch.no_grad():
        ref = render(*base, backend="reference")
        out = render(*base, backend=backend)
    assert out.rgb.shape == (20, 20, 7)
    torch.testing.assert_close(out.rgb, ref.rgb, rtol=0, atol=1e-5)


@pytest.mark.skipif(not native_available(), reason="no C compiler")
def test_native_tile_size_must_be_a_multiple_of_eight() -> None:
    scene = random_scene(10, seed=0)
    viewmat, K = front_camera(32, 32)
    with pytest.raises(ValueError, match="tile_size"):
        render(*scene.values(), viewmat, K, 32, 32, None, "native", tile_size=12)
    ref = render(*scene.values(), viewmat, K, 32, 32, None, "reference")
    for tile_size in (8, 32):
        out = render(*scene.values(), viewmat, K, 32, 32, None, "native", tile_size=tile_size)
        torch.testing.assert_close(out.rgb, ref.rgb, rtol=0, atol=1e-5)


@pytest.mark.skipif(not native_available(), reason="no C compiler")
def test_native_results_do_not_depend_on_thread_count() -> None:
    scene = random_scene(500, seed=11)
    viewmat, K = front_camera(48, 48)
    results = []
    for threads in (1, 2):
        inputs = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
        projected = project_gaussians(
            inputs["means"], inputs["quats"], inputs["scales"], inputs["opacities"], viewmat, K, 48, 48
        )
        color, depth, alpha = rasterize_native(projected, inputs["colors"], 48, 48, num_threads=threads)
        (color.sum() + depth.sum() + alpha.sum()).backward()
        results.append((color.detach(), alpha.detach(), inputs["means"].grad, inputs["colors"].grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    for one, two in zip(results[0][2:], results[1][2:]):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5 * float(one.abs().max()))
