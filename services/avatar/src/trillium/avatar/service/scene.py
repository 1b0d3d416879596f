"""Avatars and the frame pipeline: motion -> deform -> bind -> render (GaussianAvatars, arXiv 2312.02069).

Jaw and head pose need the avatar's skeleton. The asset format has no joints, so an avatar whose
template is the procedural head (``template.name == "procedural_head"``) borrows the skeleton of
:func:`procedural_head` with the matching subdivision; other avatars accept expression coefficients
and a rigid head pose only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from trillium.avatar.core import (
    AvatarAsset,
    BlendshapeRig,
    bind_to_world,
    deform,
    intrinsics_from_fov,
    look_at,
    native_available,
    procedural_head,
    render,
    triangle_frames,
)
from trillium.avatar.v1 import avatar_pb2

DEFAULT_DISTANCE = 0.45
DEFAULT_FOV_Y = 30.0
PROCEDURAL_TEMPLATE = "procedural_head"


@dataclass(frozen=True)
class Motion:
    """Validated motion of one frame: coefficients [E], head rotation/translation [3], jaw rotation [3]."""

    coefficients: np.ndarray
    head_rotation: np.ndarray
    head_translation: np.ndarray
    jaw_rotation: np.ndarray


@dataclass(frozen=True)
class Camera:
    """Validated render settings (a [4, 4] world-to-camera matrix and a vertical field of view)."""

    width: int
    height: int
    viewmat: torch.Tensor
    fov_y_degrees: float
    background: torch.Tensor


@dataclass(frozen=True)
class LoadedAvatar:
    """An avatar ready to render: its rig (template, faces, blendshapes, optional skeleton) and Gaussians."""

    avatar_id: str
    display_name: str
    asset: AvatarAsset
    rig: BlendshapeRig | None
    template: torch.Tensor
    faces: torch.Tensor
    blendshapes: torch.Tensor
    size_bytes: int
    sha256: str

    @property
    def expression_names(self) -> tuple[str, ...]:
        return tuple(self.asset.blendshape_names)

    @property
    def has_jaw(self) -> bool:
        return self.rig is not None

    def info(self) -> avatar_pb2.AvatarInfo:
        kind = self.asset.extra.get("kind", "head")
        return avatar_pb2.AvatarInfo(
            avatar_id=self.avatar_id,
            display_name=self.display_name,
            kind=avatar_pb2.AVATAR_KIND_FULL_BODY if kind == "full_body" else avatar_pb2.AVATAR_KIND_HEAD,
            num_gaussians=len(self.asset.gaussians),
            expression_names=list(self.expression_names),
            audio_driven="jawOpen" in self.expression_names or self.has_jaw,
            format_version=1,
            size_bytes=self.size_bytes,
            sha256=self.sha256,
        )


def loaded_avatar(avatar_id: str, display_name: str, asset: AvatarAsset, data: bytes) -> LoadedAvatar:
    """Wrap a validated asset; raises ValueError when it carries no embedded mesh."""
    if asset.template_vertices is None or asset.template_faces is None:
        raise ValueError("asset: has no embedded template mesh (template.vertices / template.faces)")
    template = asset.template_vertices.float()
    blendshapes = asset.blendshapes
    if blendshapes is None:
        blendshapes = torch.zeros(0, *template.shape)
    return LoadedAvatar(
        avatar_id=avatar_id,
        display_name=display_name or avatar_id,
        asset=asset,
        rig=_skeleton_rig(asset, template, blendshapes.float()),
        template=template,
        faces=asset.template_faces.long(),
        blendshapes=blendshapes.float(),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _skeleton_rig(
    asset: AvatarAsset, template: torch.Tensor, blendshapes: torch.Tensor
) -> BlendshapeRig | None:
    if asset.template.name != PROCEDURAL_TEMPLATE:
        return None
    subdivisions = int(asset.extra.get("subdivisions", 3))
    if not 0 <= subdivisions <= 5:
        return None
    reference = procedural_head(subdivisions)
    if reference.template.shape != template.shape:
        return None
    return BlendshapeRig(
        template=template,
        faces=asset.template_faces.long(),
        blendshapes=blendshapes,
        blendshape_names=tuple(asset.blendshape_names),
        joints=reference.joints,
        parents=reference.parents,
        joint_names=reference.joint_names,
        skin_weights=reference.skin_weights,
    )


def orbit_viewmat(yaw_degrees: float, pitch_degrees: float, distance: float) -> torch.Tensor:
    """[4, 4] world-to-camera matrix of a camera orbiting the head centre (yaw 0 looks at the face, +z)."""
    yaw, pitch = math.radians(yaw_degrees), math.radians(pitch_degrees)
    eye = torch.tensor(
        [
            distance * math.sin(yaw) * math.cos(pitch),
            distance * math.sin(pitch),
            distance * math.cos(yaw) * math.cos(pitch),
        ]
    )
    return look_at(eye, torch.zeros(3))


def axis_angle_matrix(axis_angle: np.ndarray) -> torch.Tensor:
    """[3, 3] rotation of an axis-angle vector [3] (Rodrigues)."""
    vector = torch.as_tensor(axis_angle, dtype=torch.float32)
    angle = float(vector.norm())
    if angle < 1e-12:
        return torch.eye(3)
    k = vector / angle
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def posed_vertices(avatar: LoadedAvatar, motion: Motion) -> torch.Tensor:
    """[V, 3] vertices: blendshapes, jaw (skeleton avatars), then the rigid head pose."""
    coefficients = torch.as_tensor(motion.coefficients, dtype=torch.float32)
    if avatar.rig is not None:
        pose = torch.zeros(len(avatar.rig.joint_names), 3)
        pose[avatar.rig.joint_names.index("jaw")] = torch.as_tensor(motion.jaw_rotation, dtype=torch.float32)
        vertices = deform(avatar.rig, coefficients, pose)
    else:
        vertices = avatar.template + torch.einsum("e,evc->vc", coefficients, avatar.blendshapes)
    rotation = axis_angle_matrix(motion.head_rotation)
    translation = torch.as_tensor(motion.head_translation, dtype=torch.float32)
    return vertices @ rotation.T + translation


def cpu_backend() -> str:
    return "native" if native_available() else "torch"


def record_gpu_memory(metrics, renderer: str) -> None:
    """Set ``avatar_gpu_memory_used_bytes`` after a gsplat render (CUDA only)."""
    if renderer == "gsplat" and torch.cuda.is_available():
        metrics.gpu_memory_used.set(torch.cuda.memory_allocated())


def render_rgb(avatar: LoadedAvatar, motion: Motion, camera: Camera, backend: str) -> np.ndarray:
    """[H, W, 3] uint8 frame of ``avatar`` in ``motion`` seen from ``camera``."""
    with torch.no_grad():
        world = bind_to_world(
            avatar.asset.gaussians, triangle_frames(posed_vertices(avatar, motion), avatar.faces)
        )
        K = intrinsics_from_fov(camera.width, camera.height, camera.fov_y_degrees)
        out = render(
            world.means, world.quats, world.scales, world.opacities, world.colors,
            camera.viewmat, K, camera.width, camera.height, camera.background, backend,
        )  # fmt: skip
    return (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
