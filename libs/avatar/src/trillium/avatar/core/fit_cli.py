"""``trillium-avatar fit``: fit mesh-bound Gaussians to multi-view images and write an avatar asset.

    python -m trillium.avatar.core.fit_cli --synthetic --out avatar.safetensors --iterations 800 --size 64
    python -m trillium.avatar.core.fit_cli --views DIR --out avatar.safetensors

``--views DIR`` reads ``DIR/views.safetensors`` with tensors ``images`` [V, H, W, 3] (float in [0, 1]
or uint8), ``viewmats`` [V, 4, 4] (world-to-camera, OpenCV), ``Ks`` [V, 3, 3], optional ``background``
[3] (default white) and optional ``template.vertices`` [Vt, 3] / ``template.faces`` [F, 3] (default:
the procedural head). Images are resized to ``--size`` (intrinsics scaled to match). The last
``--held-out`` views are only evaluated. ``--synthetic`` renders a ground-truth procedural avatar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from trillium.avatar.core.asset import AvatarAsset, TemplateRef, save_asset
from trillium.avatar.core.binding import triangle_frames
from trillium.avatar.core.fitting import FitConfig, MultiViewImages, fit, init_gaussians, synthetic_subject
from trillium.avatar.core.procedural import procedural_head


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trillium-avatar fit", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--views", type=Path, help="directory with views.safetensors")
    source.add_argument("--synthetic", action="store_true", help="fit a rendered procedural ground truth")
    parser.add_argument("--out", type=Path, required=True, help="output asset (.safetensors)")
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--subdivisions", type=int, default=2, help="procedural head template detail")
    parser.add_argument("--per-triangle", type=int, default=3, help="initial Gaussians per triangle")
    parser.add_argument("--num-views", type=int, default=12, help="synthetic training views")
    parser.add_argument("--held-out", type=int, default=4, help="held-out views")
    parser.add_argument("--densify-every", type=int, default=0, help="0 = no densification")
    parser.add_argument("--backend", default="native", choices=("native", "torch"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def load_views(
    directory: Path, size: int
) -> tuple[MultiViewImages, torch.Tensor | None, torch.Tensor | None]:
    """Views resized to ``size`` x ``size`` and the optional embedded template (vertices, faces)."""
    path = directory / "views.safetensors"
    if not path.is_file():
        raise ValueError(f"--views: {path} not found")
    tensors = load_file(str(path))
    for key in ("images", "viewmats", "Ks"):
        if key not in tensors:
            raise ValueError(f"--views: tensor {key!r} missing from {path}")
    images = tensors["images"]
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"--views: images must be [V, H, W, 3], got {list(images.shape)}")
    height, width = images.shape[1:3]
    resized = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1)
    Ks = tensors["Ks"].float().clone()
    Ks[:, 0] *= size / width
    Ks[:, 1] *= size / height
    background = tensors.get("background", torch.ones(3)).float()
    views = MultiViewImages(resized.contiguous(), tensors["viewmats"].float(), Ks, background)
    return views, tensors.get("template.vertices"), tensors.get("template.faces")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iterations < 0 or args.size < 11:
        raise SystemExit("--iterations must be >= 0 and --size >= 11")
    torch.manual_seed(args.seed)
    rig = procedural_head(args.subdivisions)
    vertices, faces, template_name = rig.template, rig.faces, f"procedural-head-s{args.subdivisions}"
    if args.synthetic:
        subject = synthetic_subject(
            size=args.size, num_train=args.num_views, num_held_out=args.held_out,
            subdivisions=args.subdivisions, seed=args.seed, backend=args.backend,
        )  # fmt: skip
        train, held_out = subject.train, subject.held_out
    else:
        views, file_vertices, file_faces = load_views(args.views, args.size)
        if file_vertices is not None and file_faces is not None:
            vertices, faces, template_name = file_vertices.float(), file_faces.long(), "embedded"
        if not 0 <= args.held_out < len(views):
            raise SystemExit(f"--held-out must be in [0, {len(views) - 1}] for {len(views)} views")
        split_at = len(views) - args.held_out
        train = views.subset(list(range(split_at)))
        held_out = views.subset(list(range(split_at, len(views)))) if args.held_out else None
    frames = triangle_frames(vertices, faces)
    generator = torch.Generator().manual_seed(args.seed + 1)
    initial = init_gaussians(faces.shape[0], args.per_triangle, generator=generator)
    config = FitConfig(
        iterations=args.iterations, densify_every=args.densify_every, backend=args.backend,
        seed=args.seed, progress=not args.no_progress, eval_every=max(args.iterations // 4, 1),
    )  # fmt: skip
    result = fit(initial, frames, train, config, held_out)
    is_procedural = template_name.startswith("procedural")
    asset = AvatarAsset(
        template=TemplateRef(template_name, int(vertices.shape[0]), int(faces.shape[0])),
        gaussians=result.gaussians,
        template_vertices=vertices,
        template_faces=faces,
        blendshape_names=rig.blendshape_names if is_procedural else (),
        blendshapes=rig.blendshapes if is_procedural else None,
        extra={"fit": {"history": result.history, "iterations": args.iterations, "size": args.size}},
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_asset(asset, args.out)
    print(json.dumps({"out": str(args.out), **result.history[-1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
