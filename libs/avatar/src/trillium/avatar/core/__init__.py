"""trillium-avatar core: Gaussian-splatting avatar renderers, triangle binding, blendshapes, metrics, assets.

Renderers follow gsplat 1.5.3 semantics (arXiv 2409.06765); binding follows GaussianAvatars
(arXiv 2312.02069). See the package README for the renderer contract.
"""

from importlib.metadata import version

from trillium.avatar.core.arkit import ARKIT_BLENDSHAPE_NAMES
from trillium.avatar.core.asset import AvatarAsset, TemplateRef, load_asset, save_asset
from trillium.avatar.core.audio import LogMelExtractor, log_mel
from trillium.avatar.core.binding import (
    BoundGaussians,
    TriangleFrames,
    WorldGaussians,
    bind_to_world,
    clone,
    init_one_per_triangle,
    prune,
    split,
    triangle_frames,
)
from trillium.avatar.core.blendshapes import (
    BlendshapeRig,
    apply_blendshapes,
    deform,
    joint_transforms,
    linear_blend_skinning,
    pose_corrective_offsets,
)
from trillium.avatar.core.camera import intrinsics_from_fov, look_at
from trillium.avatar.core.gsplat_backend import gsplat_arguments
from trillium.avatar.core.metrics import (
    best_lag_correlation,
    lip_sync_correlation,
    lip_vertex_error,
    psnr,
    ssim,
)
from trillium.avatar.core.motion import MotionTranslator, StreamingMotion, load_motion_translator
from trillium.avatar.core.procedural import icosphere, lip_vertex_ids, procedural_head, random_bound_gaussians
from trillium.avatar.core.projection import ProjectedGaussians, project_gaussians
from trillium.avatar.core.rasterize_native import native_available, rasterize_native
from trillium.avatar.core.rasterize_reference import rasterize_reference
from trillium.avatar.core.rasterize_torch import rasterize_tiled_torch
from trillium.avatar.core.render import BACKENDS, RenderOutput, render
from trillium.avatar.core.template_asset import load_template, read_template_info, save_template, validate_rig
from trillium.avatar.core.user_models import load_flame, load_smplx

__version__ = version("trillium-avatar")  # the installed package's version (pyproject.toml)

__all__ = [
    "ARKIT_BLENDSHAPE_NAMES",
    "BACKENDS",
    "LogMelExtractor",
    "MotionTranslator",
    "StreamingMotion",
    "load_motion_translator",
    "log_mel",
    "AvatarAsset",
    "BlendshapeRig",
    "BoundGaussians",
    "ProjectedGaussians",
    "RenderOutput",
    "TemplateRef",
    "TriangleFrames",
    "WorldGaussians",
    "apply_blendshapes",
    "best_lag_correlation",
    "bind_to_world",
    "clone",
    "deform",
    "gsplat_arguments",
    "icosphere",
    "init_one_per_triangle",
    "intrinsics_from_fov",
    "joint_transforms",
    "linear_blend_skinning",
    "pose_corrective_offsets",
    "lip_sync_correlation",
    "lip_vertex_error",
    "lip_vertex_ids",
    "load_asset",
    "load_flame",
    "load_smplx",
    "load_template",
    "look_at",
    "native_available",
    "procedural_head",
    "project_gaussians",
    "prune",
    "psnr",
    "rasterize_native",
    "rasterize_reference",
    "read_template_info",
    "random_bound_gaussians",
    "rasterize_tiled_torch",
    "render",
    "save_asset",
    "save_template",
    "split",
    "ssim",
    "triangle_frames",
    "validate_rig",
]
