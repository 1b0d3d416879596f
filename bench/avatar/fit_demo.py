"""Fit bound Gaussians to renders of a ground-truth avatar and report train vs held-out quality.

Ground truth: the procedural head (icosphere, ``--subdivisions``) with ~2 random Gaussians per
triangle (``synthetic_subject``), rendered at ``--size`` from ``--views`` cameras on a 150-degree front
arc; held-out cameras sit between them. The fit starts from ``--per-triangle`` Gaussians on every
triangle (random colours) and minimises 0.8 L1 + 0.2 D-SSIM + GaussianAvatars position / scale
regularisers with Adam (GaussianAvatars arXiv 2312.02069, 3DGS arXiv 2308.04079), using the native
renderer's hand-written backward.

Writes ``<out-dir>/avatar-fit.json`` ({"meta", "history"}: PSNR / SSIM on train and held-out views at
each checkpoint) and ``<out-dir>/avatar-fit.png`` (held-out views: ground truth, before, after).

    python bench/avatar/fit_demo.py            # 64x64, 800 iterations (about a minute on 2 idle cores)
    python bench/avatar/fit_demo.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from trillium.avatar.core.fitting import (
    FitConfig,
    evaluate,
    fit,
    init_gaussians,
    render_views,
    synthetic_subject,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--subdivisions", type=int, default=2)
    parser.add_argument("--per-triangle", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.iterations, args.views, args.held_out, args.subdivisions = 24, 60, 3, 2, 1

    subject = synthetic_subject(
        size=args.size, num_train=args.views, num_held_out=args.held_out,
        subdivisions=args.subdivisions, seed=args.seed,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    initial = init_gaussians(subject.rig.faces.shape[0], args.per_triangle, generator=generator)
    config = FitConfig(iterations=args.iterations, eval_every=max(args.iterations // 8, 1), seed=args.seed)
    start = time.perf_counter()
    result = fit(initial, subject.frames, subject.train, config, subject.held_out)
    seconds = time.perf_counter() - start
    initial_row = {"step": 0, "num_gaussians": len(initial)}
    for prefix, views in (("train", subject.train), ("held_out", subject.held_out)):
        scores = evaluate(initial, subject.frames, views)
        initial_row[f"{prefix}_psnr"], initial_row[f"{prefix}_ssim"] = scores["psnr"], scores["ssim"]
    meta = {
        "size": args.size, "iterations": args.iterations, "train_views": args.views,
        "held_out_views": args.held_out, "triangles": int(subject.rig.faces.shape[0]),
        "ground_truth_gaussians": len(subject.ground_truth), "initial_gaussians": len(initial),
        "seconds": seconds, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "backend": config.backend, "quick": args.quick,
    }  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "history": [initial_row, *result.history]}
    (args.out_dir / "avatar-fit.json").write_text(json.dumps(payload, indent=2))
    _figure(subject, initial, result.gaussians, args.out_dir / "avatar-fit.png")
    final = result.history[-1]
    print(
        f"held-out PSNR {initial_row['held_out_psnr']:.2f} -> {final['held_out_psnr']:.2f} dB, "
        f"SSIM {final['held_out_ssim']:.3f}, train PSNR {final['train_psnr']:.2f} dB, {seconds:.1f} s"
    )
    return 0


def _figure(subject, initial, fitted, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = subject.held_out
    rows = {"ground truth": views.images}
    for name, gaussians in (("before", initial), ("after", fitted)):
        with torch.no_grad():
            rows[name] = render_views(gaussians, subject.frames, views.viewmats, views.Ks, *views.size,
                                      views.background).clamp(0, 1)  # fmt: skip
    figure, axes = plt.subplots(3, len(views), figsize=(2 * len(views), 6), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(len(views)):
            axes[r][c].imshow(images[c].numpy())
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(name)
    figure.suptitle("held-out views")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
