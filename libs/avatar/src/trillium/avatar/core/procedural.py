"""A tiny procedural head for tests and demos (not a real template).

An icosphere squashed to head proportions, facing +z with +y up (units: metres), with a two-joint
skeleton (neck -> jaw), smooth jaw skinning weights and a few ARKit-named blendshapes whose offsets
are analytic: ``jawOpen`` (the jaw region rotated 0.35 rad about the jaw hinge), ``mouthSmileLeft``
/ ``mouthSmileRight`` (mouth corners pulled up and back), ``mouthPucker`` (lips forward) and
``eyeBlinkLeft`` / ``eyeBlinkRight`` (eye regions pressed down). Known geometry makes exact
ground truth for binding, deformation and metric tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from trillium.avatar.core.binding import BoundGaussians
from trillium.avatar.core.blendshapes import BlendshapeRig
from trillium.avatar.core.rotations import axis_angle_to_rotmat
from trillium.avatar.core.sh import rgb_to_sh0

HEAD_RADII = (0.075, 0.10, 0.09)
MOUTH_Y = -0.045
JAW_HINGE = (0.0, -0.01, -0.01)
JAW_OPEN_ANGLE = 0.35
BLENDSHAPE_NAMES = (
    "jawOpen",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthPucker",
    "eyeBlinkLeft",
    "eyeBlinkRight",
)


def icosphere(subdivisions: int = 2, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Unit icosphere: vertices [V, 3] and outward-facing (counter-clockwise) faces [F, 3].

    V = 10 * 4^s + 2, F = 20 * 4^s for s subdivisions.
    """
    if not 0 <= subdivisions <= 6:
        raise ValueError(f"subdivisions must be in [0, 6], got {subdivisions}")
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
             (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]  # fmt: skip
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]  # fmt: skip
    vertices = [tuple(c / math.sqrt(1 + t * t) for c in v) for v in verts]
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}
        new_faces = []
        for a, b, c in faces:
            ab, bc, ca = (_midpoint(vertices, midpoints, i, j) for i, j in ((a, b), (b, c), (c, a)))
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return torch.tensor(vertices, dtype=dtype), torch.tensor(faces, dtype=torch.long)


def _midpoint(vertices: list, midpoints: dict[tuple[int, int], int], i: int, j: int) -> int:
    """Index of the unit-sphere midpoint of edge (i, j), created once per edge."""
    key = (min(i, j), max(i, j))
    if key not in midpoints:
        m = [(a + b) / 2 for a, b in zip(vertices[i], vertices[j])]
        norm = math.sqrt(sum(c * c for c in m))
        vertices.append(tuple(c / norm for c in m))
        midpoints[key] = len(vertices) - 1
    return midpoints[key]


def procedural_head(subdivisions: int = 3, dtype=torch.float32) -> BlendshapeRig:
    """The procedural head rig (see module docstring). subdivisions=3 gives 642 vertices, 1280 faces."""
    unit, faces = icosphere(subdivisions, dtype)
    template = unit * torch.tensor(HEAD_RADII, dtype=dtype)
    jaw_weight = _jaw_weight(template)
    joints = torch.tensor([[0.0, -0.10, -0.01], JAW_HINGE], dtype=dtype)
    skin_weights = torch.stack([1 - jaw_weight, jaw_weight], dim=-1)
    shapes = torch.stack(
        [
            _jaw_open(template, jaw_weight),
            _smile(template, side=1.0),
            _smile(template, side=-1.0),
            _pucker(template),
            _blink(template, side=1.0),
            _blink(template, side=-1.0),
        ]
    )
    return BlendshapeRig(
        template=template,
        faces=faces,
        blendshapes=shapes,
        blendshape_names=BLENDSHAPE_NAMES,
        joints=joints,
        parents=(-1, 0),
        joint_names=("neck", "jaw"),
        skin_weights=skin_weights,
        joint_roles={"root": "neck", "neck": "neck", "head": "neck", "jaw": "jaw"},
    )


def lip_vertex_ids(template: Tensor) -> Tensor:
    """Indices of vertices on the lips (front of the face, near the mouth line)."""
    x, y, z = template.unbind(-1)
    near_mouth = ((y - MOUTH_Y).abs() < 0.015) & (x.abs() < 0.035) & (z > 0.5 * HEAD_RADII[2])
    return torch.nonzero(near_mouth).squeeze(-1)


def _jaw_weight(v: Tensor) -> Tensor:
    x, y, z = v.unbind(-1)
    return torch.sigmoid((MOUTH_Y - y) / 0.006) * torch.sigmoid(z / 0.02)


def _jaw_open(v: Tensor, weight: Tensor) -> Tensor:
    hinge = torch.tensor(JAW_HINGE, dtype=v.dtype)
    rot = axis_angle_to_rotmat(torch.tensor([JAW_OPEN_ANGLE, 0.0, 0.0], dtype=v.dtype))
    opened = (v - hinge) @ rot.T + hinge
    return weight[:, None] * (opened - v)


def _bump(v: Tensor, centre: tuple[float, float, float], width: float) -> Tensor:
    return torch.exp(-((v - torch.tensor(centre, dtype=v.dtype)) ** 2).sum(-1) / (2 * width**2))


def _front(y: float, x: float = 0.0) -> float:
    a, b, c = HEAD_RADII
    return c * math.sqrt(max(0.0, 1 - (x / a) ** 2 - (y / b) ** 2))


def _smile(v: Tensor, side: float) -> Tensor:
    corner = (side * 0.025, MOUTH_Y, _front(MOUTH_Y, 0.025))
    w = _bump(v, corner, 0.012)
    return w[:, None] * torch.tensor([side * 0.004, 0.008, -0.004], dtype=v.dtype)


def _pucker(v: Tensor) -> Tensor:
    w = _bump(v, (0.0, MOUTH_Y, _front(MOUTH_Y)), 0.015)
    return w[:, None] * torch.tensor([0.0, 0.0, 0.01], dtype=v.dtype) - w[:, None] * v * torch.tensor(
        [0.2, 0.0, 0.0], dtype=v.dtype
    )


def _blink(v: Tensor, side: float) -> Tensor:
    eye_y = 0.02
    w = _bump(v, (side * 0.03, eye_y, _front(eye_y, 0.03)), 0.01)
    return w[:, None] * torch.tensor([0.0, -0.008, -0.002], dtype=v.dtype)


def random_bound_gaussians(
    rig: BlendshapeRig, num_gaussians: int, generator: torch.Generator | None = None
) -> BoundGaussians:
    """Gaussians bound to random triangles with statistics like a trained avatar (for demos and benchmarks).

    In-plane standard deviation about half the mean spacing of ``num_gaussians`` points on the
    surface, three times thinner along the normal, mostly opaque (opacity logit uniform in [0, 5]),
    local means within about a triangle of the centroid, random colours.
    """
    if num_gaussians <= 0:
        raise ValueError(f"num_gaussians must be positive, got {num_gaussians}")
    num_faces = rig.faces.shape[0]
    dtype = rig.template.dtype
    spacing = 0.33 * math.sqrt(num_faces / num_gaussians)
    log_scales = torch.log(torch.rand(num_gaussians, 3, generator=generator, dtype=dtype) * 0.6 + 0.7)
    log_scales = log_scales + math.log(spacing)
    log_scales[:, 1] -= math.log(3.0)
    quats = torch.randn(num_gaussians, 4, generator=generator, dtype=dtype) * 0.1
    quats[:, 0] = 1.0
    return BoundGaussians(
        parents=torch.randint(0, num_faces, (num_gaussians,), generator=generator),
        local_means=torch.randn(num_gaussians, 3, generator=generator, dtype=dtype) * 0.2,
        local_log_scales=log_scales,
        local_quats=quats,
        opacity_logits=torch.rand(num_gaussians, generator=generator, dtype=dtype) * 5.0,
        sh0=rgb_to_sh0(torch.rand(num_gaussians, 3, generator=generator, dtype=dtype)),
    )
