"""Blendshape + linear-blend-skinning mesh deformation (FLAME-style, Li et al. 2017; ARKit-named expressions).

``v = T + sum_i e_i B_i`` (expression / shape offsets), then linear blend skinning
``v' = sum_b w_vb G_b(theta) G_b(0)^-1 v`` over a small joint tree (e.g. neck -> jaw), with joint
rotations given as axis-angle vectors (Rodrigues). Expression weights for ARKit-named shapes live in
[0, 1] by convention; this module does not clamp them.

Joint rotations follow the SMPL / FLAME convention (Loper et al. 2015; Li et al. 2017): every joint's
rest frame is world-aligned, so an axis-angle rotates its subtree about the joint's rest position in
the parent's posed frame. Optional pose correctives (SMPL's pose blendshapes) add
``sum_p f_p(theta) P_p`` before skinning, with ``f = vec(R(theta_j) - I)`` over every joint but the root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from trillium.avatar.core.rotations import axis_angle_to_rotmat


@dataclass(frozen=True)
class BlendshapeRig:
    """A deformable mesh.

    Attributes:
        template: [V, 3] rest vertices T.
        faces: [F, 3] long.
        blendshapes: [E, V, 3] offsets B_i.
        blendshape_names: E names (ARKit-style, e.g. "jawOpen").
        joints: [J, 3] rest joint positions.
        parents: J parent indices, -1 for the root; parents come before children.
        joint_names: J names.
        skin_weights: [V, J], rows sum to 1.
        joint_roles: role -> joint name, for the roles ``root``, ``neck``, ``head``, ``jaw``,
            ``left_eye``, ``right_eye`` and, on full bodies, ``left_`` / ``right_`` + ``shoulder``,
            ``elbow``, ``wrist``, ``hip``, ``knee``, ``ankle`` a template has (e.g.
            ``{"jaw": "jaw", "head": "head"}``).
        pose_correctives: [9 (J - 1), V, 3] pose blendshapes P_p, or None.
    """

    template: Tensor
    faces: Tensor
    blendshapes: Tensor
    blendshape_names: tuple[str, ...]
    joints: Tensor
    parents: tuple[int, ...]
    joint_names: tuple[str, ...]
    skin_weights: Tensor
    joint_roles: Mapping[str, str] = field(default_factory=dict)
    pose_correctives: Tensor | None = None

    def coefficients(self, **weights: float) -> Tensor:
        """[E] coefficient vector from names, e.g. ``rig.coefficients(jawOpen=0.5)``."""
        coeffs = torch.zeros(len(self.blendshape_names), dtype=self.template.dtype)
        for name, value in weights.items():
            if name not in self.blendshape_names:
                raise ValueError(f"unknown blendshape {name!r}; known: {', '.join(self.blendshape_names)}")
            coeffs[self.blendshape_names.index(name)] = value
        return coeffs

    def joint_index(self, name_or_role: str) -> int:
        """Index of a joint given its name or its role (see ``joint_roles``)."""
        if name_or_role in self.joint_names:
            return self.joint_names.index(name_or_role)
        if name_or_role in self.joint_roles:
            return self.joint_names.index(self.joint_roles[name_or_role])
        roles = f"; roles: {', '.join(sorted(self.joint_roles))}" if self.joint_roles else ""
        raise ValueError(f"unknown joint {name_or_role!r}; known: {', '.join(self.joint_names)}{roles}")

    def pose(
        self, body_pose: Tensor | None = None, **axis_angles: tuple[float, float, float] | Tensor
    ) -> Tensor:
        """[J, 3] pose: ``body_pose`` [J, 3] (a per-joint axis-angle input, zeros if None) with the joints
        given by name or role overwritten, e.g. ``rig.pose(jaw=(0.2, 0, 0), head=(0, 0.3, 0))``."""
        pose = torch.zeros(len(self.joint_names), 3, dtype=self.template.dtype)
        if body_pose is not None:
            if tuple(body_pose.shape) != tuple(pose.shape):
                raise ValueError(f"body_pose: expected shape {list(pose.shape)}, got {list(body_pose.shape)}")
            pose = body_pose.to(pose.dtype).clone()
        for name, value in axis_angles.items():
            pose[self.joint_index(name)] = torch.as_tensor(value, dtype=pose.dtype)
        return pose


def apply_blendshapes(template: Tensor, blendshapes: Tensor, coefficients: Tensor) -> Tensor:
    """``T + sum_i e_i B_i``.

    Args:
        template: [V, 3]; blendshapes: [E, V, 3]; coefficients: [..., E].

    Returns:
        [..., V, 3].
    """
    if coefficients.shape[-1] != blendshapes.shape[0]:
        raise ValueError(f"coefficients has {coefficients.shape[-1]} entries, rig has {blendshapes.shape[0]}")
    return template + torch.einsum("...e,evc->...vc", coefficients, blendshapes)


def joint_transforms(joints: Tensor, parents: tuple[int, ...], pose: Tensor) -> Tensor:
    """Skinning transforms ``G_b(theta) G_b(0)^-1`` of a joint tree.

    Args:
        joints: [J, 3] rest positions; parents: J indices (-1 = root); pose: [..., J, 3] axis-angle.

    Returns:
        [..., J, 4, 4] transforms that map rest-pose points to posed points.
    """
    if pose.shape[-2] != joints.shape[0]:
        raise ValueError(f"pose has {pose.shape[-2]} joints, rig has {joints.shape[0]}")
    rots = axis_angle_to_rotmat(pose)
    globals_: list[Tensor] = []
    for j, parent in enumerate(parents):
        local = _rigid(rots[..., j, :, :], joints[j] - (joints[parent] if parent >= 0 else 0.0))
        globals_.append(local if parent < 0 else globals_[parent] @ local)
    world = torch.stack(globals_, dim=-3)
    rest_inverse = _rigid(torch.eye(3, dtype=joints.dtype).expand(joints.shape[0], 3, 3), -joints)
    return world @ rest_inverse


def linear_blend_skinning(vertices: Tensor, skin_weights: Tensor, transforms: Tensor) -> Tensor:
    """``v' = sum_b w_vb A_b v``. vertices: [..., V, 3]; skin_weights: [V, J]; transforms: [..., J, 4, 4]."""
    blended = torch.einsum("vj,...jab->...vab", skin_weights, transforms)
    return (blended[..., :3, :3] @ vertices[..., None]).squeeze(-1) + blended[..., :3, 3]


def pose_corrective_offsets(pose_correctives: Tensor, pose: Tensor) -> Tensor:
    """SMPL pose blendshapes ``sum_p f_p P_p`` with ``f = vec(R(theta_j) - I)``, j = 1..J-1 (row-major).

    Args:
        pose_correctives: [9 (J - 1), V, 3]; pose: [..., J, 3] axis-angle.

    Returns:
        [..., V, 3] offsets (zero at the rest pose).
    """
    if pose_correctives.shape[0] != 9 * (pose.shape[-2] - 1):
        raise ValueError(
            f"pose_correctives has {pose_correctives.shape[0]} rows, pose needs 9 x {pose.shape[-2] - 1}"
        )
    rots = axis_angle_to_rotmat(pose[..., 1:, :])
    features = (rots - torch.eye(3, dtype=rots.dtype, device=rots.device)).flatten(-3)
    return torch.einsum("...p,pvc->...vc", features, pose_correctives)


def deform(rig: BlendshapeRig, coefficients: Tensor, pose: Tensor | None = None) -> Tensor:
    """Posed vertices [..., V, 3] for expression coefficients [..., E] and joint pose [..., J, 3]."""
    vertices = apply_blendshapes(rig.template, rig.blendshapes, coefficients)
    if pose is None:
        return vertices
    if rig.pose_correctives is not None:
        vertices = vertices + pose_corrective_offsets(rig.pose_correctives, pose)
    return linear_blend_skinning(vertices, rig.skin_weights, joint_transforms(rig.joints, rig.parents, pose))


def _rigid(rotation: Tensor, translation: Tensor) -> Tensor:
    """[..., 4, 4] from rotation [..., 3, 3] and translation [..., 3] (broadcast)."""
    shape = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    out = torch.zeros(*shape, 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out
