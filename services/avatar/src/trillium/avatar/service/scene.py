"""Avatars and the frame pipeline: motion -> deform -> bind -> render (GaussianAvatars, arXiv 2312.02069).

Jaw rotation and per-joint poses need the avatar's skeleton. The asset format has no joints, so an
avatar borrows them from the template its header names (``template.name``): the procedural head
(``"procedural_head"``) from :func:`procedural_head` with the matching subdivision, any other from
the service's :class:`TemplateLibrary` (e.g. ``anny-head``), provided the template has the same
topology (vertex count and faces) as the mesh embedded in the asset. The asset's own mesh and
blendshapes are kept; joints, parents and skinning weights come from the template, and posing is
linear blend skinning (``deform``). Avatars without a matching template take expression
coefficients and the rigid head pose only. The head pose is always rigid (about the origin, after
skinning), the same for every avatar; ``body_pose`` can rotate the template's own neck/head joints.
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
from trillium.avatar.service.templates import TemplateLibrary
from trillium.avatar.v1 import avatar_pb2

DEFAULT_DISTANCE = 0.45
DEFAULT_FOV_Y = 30.0
PROCEDURAL_TEMPLATE = "procedural_head"


@dataclass(frozen=True)
class Motion:
    """Validated motion of one frame: coefficients [E], head rotation/translation [3], jaw rotation [3],
    and optionally every joint's axis-angle ``body_pose`` [J, 3] (its jaw row then equals
    ``jaw_rotation``)."""

    coefficients: np.ndarray
    head_rotation: np.ndarray
    head_translation: np.ndarray
    jaw_rotation: np.ndarray
    body_pose: np.ndarray | None = None


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
    jaw_from_audio: bool = False

    @property
    def expression_names(self) -> tuple[str, ...]:
        return tuple(self.asset.blendshape_names)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joints of the skeleton (``body_pose`` order); empty without one."""
        return self.rig.joint_names if self.rig is not None else ()

    @property
    def jaw_index(self) -> int | None:
        """Index of the jaw joint (by name or role), or None."""
        if self.rig is None:
            return None
        try:
            return self.rig.joint_index("jaw")
        except ValueError:
            return None

    @property
    def has_jaw(self) -> bool:
        return self.jaw_index is not None

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
            joint_names=list(self.joint_names),
        )


def loaded_avatar(
    avatar_id: str,
    display_name: str,
    asset: AvatarAsset,
    data: bytes,
    templates: TemplateLibrary | None = None,
) -> LoadedAvatar:
    """Wrap a validated asset, with the skeleton of its template when one matches (see module doc);
    raises ValueError when it carries no embedded mesh."""
    if asset.template_vertices is None or asset.template_faces is None:
        raise ValueError("asset: has no embedded template mesh (template.vertices / template.faces)")
    template = asset.template_vertices.float()
    blendshapes = asset.blendshapes
    if blendshapes is None:
        blendshapes = torch.zeros(0, *template.shape)
    faces = asset.template_faces.long()
    reference = skeleton_source(asset, templates)
    rig = None
    if reference is not None and _same_topology(reference, template, faces):
        rig = BlendshapeRig(
            template=template,
            faces=faces,
            blendshapes=blendshapes.float(),
            blendshape_names=tuple(asset.blendshape_names),
            joints=reference.joints,
            parents=reference.parents,
            joint_names=reference.joint_names,
            skin_weights=reference.skin_weights,
            joint_roles=dict(reference.joint_roles),
            pose_correctives=reference.pose_correctives,
        )
    return LoadedAvatar(
        avatar_id=avatar_id,
        display_name=display_name or avatar_id,
        asset=asset,
        rig=rig,
        template=template,
        faces=faces,
        blendshapes=blendshapes.float(),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        jaw_from_audio=_jaw_from_audio(asset, rig),
    )


def skeleton_source(asset: AvatarAsset, templates: TemplateLibrary | None) -> BlendshapeRig | None:
    """The template rig whose skeleton the asset's mesh uses, or None."""
    if asset.template.name == PROCEDURAL_TEMPLATE:
        subdivisions = int(asset.extra.get("subdivisions", 3))
        return procedural_head(subdivisions) if 0 <= subdivisions <= 5 else None
    return templates.get(asset.template.name) if templates is not None else None


def _same_topology(reference: BlendshapeRig, template: torch.Tensor, faces: torch.Tensor) -> bool:
    return reference.template.shape == template.shape and torch.equal(reference.faces.long(), faces)


def _jaw_from_audio(asset: AvatarAsset, rig: BlendshapeRig | None) -> bool:
    """Whether the audio model's jaw-pitch channel rotates the jaw joint.

    The procedural head's ``jawOpen`` shape is tuned together with its jaw joint (both are driven).
    A template's ARKit ``jawOpen`` blendshape already opens the jaw, so for those the jaw joint is
    left to explicit ``jaw_rotation`` / ``body_pose`` (driving both would open it twice).
    """
    if rig is None:
        return False
    if asset.template.name == PROCEDURAL_TEMPLATE:
        return True
    return "jawOpen" not in rig.blendshape_names


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
    """[V, 3] vertices: blendshapes, joint pose (skeleton avatars: ``body_pose`` or the jaw alone, by
    linear blend skinning), then the rigid head pose."""
    coefficients = torch.as_tensor(motion.coefficients, dtype=torch.float32)
    if avatar.rig is not None:
        if motion.body_pose is not None:
            pose = torch.as_tensor(motion.body_pose, dtype=torch.float32).reshape(-1, 3)
        else:
            pose = torch.zeros(len(avatar.rig.joint_names), 3)
            if avatar.jaw_index is not None:
                pose[avatar.jaw_index] = torch.as_tensor(motion.jaw_rotation, dtype=torch.float32)
        vertices = deform(avatar.rig, coefficients, pose if bool(pose.any()) else None)  # rest: no skinning
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
