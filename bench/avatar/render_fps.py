"""CPU rendering speed of the avatar renderers, with the exact reference in the same run.

Scene: the procedural head (icosphere, 20,480 triangles) with N Gaussians bound to random triangles
(``random_bound_gaussians``: trained-avatar-like sizes, mostly opaque), seen by a 20-degree camera
0.7 m in front so the head fills most of the frame. For each N and image size we time full frames
(projection + compositing, ``render()``; ``fps`` from the median wall time, ``fps_best`` from the
fastest frame, and ``fps_cpu_estimate`` = threads / (process CPU seconds per frame), i.e. the rate
the frame's CPU work would allow on that many otherwise idle cores; the last two are the better
estimates when the machine is shared with other work) of:

- ``native``: the compiled C/OpenMP renderer (serving and fitting path), and
- ``torch``: the tiled torch renderer (portable autograd fallback);

plus, for ``native``, ``fps_forward_backward``: forward + backward of an L1 image loss (fitting);

and, because the dense reference is far too slow at full size, we compare both against the
reference on a centre crop of ``--crop`` pixels (same camera, principal point shifted, all N
Gaussians): ``fps_reference`` is the reference's FPS on that crop, ``fps_on_reference_region`` the
renderer's FPS on the same crop (so their ratio is a same-run speedup), and
``max_abs_err_vs_reference`` the largest |difference| over RGB and alpha on the crop.

Writes ``<out-dir>/avatar-render.json`` ({"meta", "rows"}) and ``<out-dir>/avatar-render.png``, and
puts the same rows into the ``rows`` section of ``<out-dir>/avatar.json`` (see ``avatar_results.py``).

    python bench/avatar/render_fps.py            # full run (a few minutes on 2 cores)
    python bench/avatar/render_fps.py --quick    # smoke run on tiny sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from trillium.avatar.core import (
    bind_to_world,
    intrinsics_from_fov,
    look_at,
    native_available,
    procedural_head,
    random_bound_gaussians,
    render,
    triangle_frames,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling results helper
from avatar_results import merge_results

CPU_TIMES: list[float] = []
FOV_DEGREES = 20.0
CAMERA_DISTANCE = 0.7


def make_scene(num_gaussians: int, subdivisions: int, seed: int = 0):
    rig = procedural_head(subdivisions)
    bound = random_bound_gaussians(rig, num_gaussians, torch.Generator().manual_seed(seed))
    return bind_to_world(bound, triangle_frames(rig.template, rig.faces))


def camera(size: int, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    viewmat = look_at(torch.tensor([0.0, 0.0, CAMERA_DISTANCE]), torch.zeros(3))
    K = intrinsics_from_fov(size, size, FOV_DEGREES)
    if crop is None:
        return viewmat, K, size
    K = K.clone()
    K[0, 2] -= (size - crop) / 2
    K[1, 2] -= (size - crop) / 2
    return viewmat, K, crop


def time_frames(scene, viewmat, K, size: int, *, backend: str, repeats: int) -> tuple[list[float], object]:
    """Wall seconds per frame for ``repeats`` frames (after one warm-up frame for the compiled kernel).

    Also records process CPU seconds per frame in ``CPU_TIMES`` (see ``fps_cpu_estimate``).
    """
    background = torch.ones(3)
    args = (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, viewmat, K, size, size)
    with torch.no_grad():
        if backend == "native":
            render(*args, background, backend=backend)
        times = []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = render(*args, background, backend=backend)
            times.append(time.perf_counter() - start)
            CPU_TIMES.append(time.process_time() - cpu_start)
    return times, out


def time_train_steps(scene, viewmat, K, size: int, repeats: int) -> float:
    """Median seconds of forward + backward (an L1 image loss) with the native renderer."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (scene.means, scene.quats, scene.scales)]
    rest = (scene.opacities, scene.colors, viewmat, K, size, size)
    target = torch.zeros(size, size, 3)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = render(*leaves, *rest, torch.ones(3), backend="native")
        (out.rgb - target).abs().mean().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def max_abs_err(a, b) -> float:
    return max(float((a.rgb - b.rgb).abs().max()), float((a.alpha - b.alpha).abs().max()))


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    configs = [(n, s) for n in args.gaussians for s in args.sizes]
    for num_gaussians, size in tqdm(configs, desc="avatar render", disable=args.no_progress):
        scene = make_scene(num_gaussians, args.subdivisions)
        crop_view, crop_K, crop = camera(size, min(args.crop, size))
        ref_times, ref_out = time_frames(scene, crop_view, crop_K, crop, backend="reference", repeats=1)
        for backend in ("native", "torch") if native_available() else ("torch",):
            viewmat, K, _ = camera(size)
            repeats = args.repeats if backend == "native" else 1
            CPU_TIMES.clear()
            times, _ = time_frames(scene, viewmat, K, size, backend=backend, repeats=repeats)
            cpu_seconds = statistics.median(CPU_TIMES)
            crop_times, crop_out = time_frames(
                scene, crop_view, crop_K, crop, backend=backend, repeats=repeats
            )
            rows.append(
                {
                    "renderer": backend,
                    "gaussians": num_gaussians,
                    "width": size,
                    "height": size,
                    "fps": 1.0 / statistics.median(times),
                    "fps_best": 1.0 / min(times),
                    "fps_cpu_estimate": args.threads / cpu_seconds,
                    "fps_reference": 1.0 / ref_times[0],
                    "max_abs_err_vs_reference": max_abs_err(crop_out, ref_out),
                    "reference_region": f"{crop}x{crop} centre crop",
                    "fps_on_reference_region": 1.0 / statistics.median(crop_times),
                    "speedup_vs_reference": ref_times[0] / statistics.median(crop_times),
                    "threads": args.threads,
                    "frames_timed": repeats,
                }
            )
            if backend == "native":
                train_seconds = time_train_steps(scene, viewmat, K, size, max(1, repeats // 2))
                rows[-1]["fps_forward_backward"] = 1.0 / train_seconds
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for renderer in sorted({r["renderer"] for r in rows}):
        for size in sorted({r["width"] for r in rows}):
            sel = [r for r in rows if r["renderer"] == renderer and r["width"] == size]
            ax.plot(
                [r["gaussians"] for r in sel],
                [r["fps"] for r in sel],
                marker="o",
                label=f"{renderer} {size}px",
            )
    ax.axhline(25, color="grey", linestyle="--", linewidth=1, label="25 FPS")
    ax.set_xlabel("Gaussians")
    ax.set_ylabel("frames per second (CPU)")
    ax.set_yscale("log")
    ax.set_title(f"avatar CPU rendering, {rows[0]['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20, help="timed frames per native configuration")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.gaussians, args.sizes, args.subdivisions, args.repeats, args.crop = [100, 200], [32], 2, 1, 16
    else:
        args.gaussians, args.sizes, args.subdivisions = [5000, 10000, 20000], [256, 512], 5
    rows = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "avatar-render",
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "quick": args.quick,
        "scene": "procedural head, random_bound_gaussians, fov 20 deg, distance 0.7 m, white background",
    }
    (args.out_dir / "avatar-render.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    merge_results(args.out_dir, {"rows": rows}, "render", meta)
    plot(rows, args.out_dir / "avatar-render.png")
    for r in rows:
        print(
            f"{r['renderer']:>6} N={r['gaussians']:>6} {r['width']}x{r['height']}: {r['fps']:7.2f} FPS "
            f"(best {r['fps_best']:.2f}, cpu-est {r['fps_cpu_estimate']:.2f}, "
            f"fwd+bwd {r.get('fps_forward_backward', float('nan')):.2f}) | "
            f"reference {r['fps_reference']:.3f} FPS on {r['reference_region']} "
            f"(x{r['speedup_vs_reference']:.0f}), max |err| {r['max_abs_err_vs_reference']:.2e}"
        )


if __name__ == "__main__":
    main()
