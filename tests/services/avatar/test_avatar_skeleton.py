"""Skeletons from templates: the anny-head avatar takes jaw rotation and a per-joint body_pose."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from trillium.avatar.core import intrinsics_from_fov, load_asset, load_template
from trillium.avatar.service.registry import parse_asset
from trillium.avatar.service.scene import DEFAULT_DISTANCE, DEFAULT_FOV_Y, orbit_viewmat
from trillium.avatar.service.templates import TemplateLibrary
from trillium.avatar.v1 import avatar_pb2
from trillium.servicekit.chunks import blob_header, iter_chunks

REPO = Path(__file__).resolve().parents[3]
ANNY = "anny-head"
ANNY_ASSET = REPO / "assets" / "avatars" / ANNY / "avatar.safetensors"
TEMPLATES = REPO / "assets" / "templates"
SIZE = 96
NAN = float("nan")

pytestmark = pytest.mark.skipif(not ANNY_ASSET.is_file(), reason="anny-head avatar not built")


def render(stub, avatar_id: str = ANNY, **motion) -> np.ndarray:
    request = avatar_pb2.RenderFrameRequest(
        avatar_id=avatar_id,
        motion=avatar_pb2.MotionParams(**motion),
        settings=avatar_pb2.RenderSettings(
            width=SIZE, height=SIZE, encoding=avatar_pb2.FRAME_ENCODING_RAW_RGB8
        ),
    )
    frame = stub.RenderFrame(request)
    return np.frombuffer(frame.data, np.uint8).reshape(SIZE, SIZE, 3).astype(int)


def image_row(point: torch.Tensor) -> float:
    """Pixel row of a template point [3] seen by the default camera."""
    camera = orbit_viewmat(0.0, 0.0, DEFAULT_DISTANCE) @ torch.cat([point, torch.ones(1)])
    projected = intrinsics_from_fov(SIZE, SIZE, DEFAULT_FOV_Y) @ camera[:3]
    return float(projected[1] / projected[2])


@pytest.fixture(scope="module")
def joints(stub) -> list[str]:
    avatars = {a.avatar_id: a for a in stub.ListAvatars(avatar_pb2.ListAvatarsRequest()).avatars}
    return list(avatars[ANNY].joint_names)


def test_list_reports_the_template_skeleton(stub, joints):
    template = load_template(TEMPLATES / ANNY / "template.safetensors")
    assert joints == list(template.joint_names) and len(joints) == 64
    avatars = {a.avatar_id: a for a in stub.ListAvatars(avatar_pb2.ListAvatarsRequest()).avatars}
    assert list(avatars["procedural-head"].joint_names) == ["neck", "jaw"]
    assert avatars[ANNY].audio_driven


def test_jaw_rotation_moves_the_lower_face_only(stub):
    neutral, opened = render(stub), render(stub, jaw_rotation=[0.25, 0.0, 0.0])
    changed = np.abs(opened - neutral).sum(-1) > 0
    assert changed.sum() > 0.03 * SIZE * SIZE  # the jaw visibly opens
    template = load_template(TEMPLATES / ANNY / "template.safetensors")
    eyes = max(image_row(template.joints[template.joint_index(e)]) for e in ("left_eye", "right_eye"))
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() > eyes + 0.1 * SIZE, (rows.min(), eyes)  # nothing at or above the eyes moves
    assert np.array_equal(opened[: SIZE // 2], neutral[: SIZE // 2])


def test_body_pose_drives_every_joint(stub, joints):
    neutral = render(stub)
    assert np.array_equal(render(stub, body_pose=[0.0] * (3 * len(joints))), neutral)
    jaw = np.zeros((len(joints), 3), np.float32)
    jaw[joints.index("jaw")] = (0.25, 0.0, 0.0)
    via_pose = render(stub, body_pose=jaw.ravel().tolist())
    assert np.array_equal(via_pose, render(stub, jaw_rotation=[0.25, 0.0, 0.0]))
    # an explicit jaw_rotation replaces body_pose's jaw entry
    closed = render(stub, body_pose=jaw.ravel().tolist(), jaw_rotation=[0.0, 0.0, 0.0])
    assert np.array_equal(closed, neutral)
    nod = np.zeros((len(joints), 3), np.float32)
    nod[joints.index("head")] = (0.3, 0.0, 0.0)
    nodded = render(stub, body_pose=nod.ravel().tolist())
    assert np.abs(nodded[: SIZE // 2] - neutral[: SIZE // 2]).mean() > 1.0  # the whole head moves


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([0.0] * 3, "3 values (axis-angle) per joint"),
        ([0.0] * (3 * 64 + 1), "192 for 64 joints"),
        ([0.0] * (3 * 10) + [NAN] + [0.0] * (3 * 54 - 1), "first at joint"),
        ([float("inf")] * 192, "must be finite"),
    ],
)
def test_bad_body_pose_is_invalid_argument_naming_the_field(stub, values, text):
    with pytest.raises(grpc.RpcError) as info:
        render(stub, body_pose=values)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("motion.body_pose"), info.value.details()
    assert text in info.value.details()
    assert render(stub).mean() > 10  # the server still serves


def test_uploaded_asset_finds_its_template_by_name(stub):
    data = ANNY_ASSET.read_bytes()
    header = avatar_pb2.LoadAvatarHeader(
        avatar_id="anny-upload", replace=True, blob=blob_header("asset", data, chunk_bytes=1 << 20)
    )
    messages = [avatar_pb2.LoadAvatarRequest(header=header)]
    messages += [avatar_pb2.LoadAvatarRequest(chunk=c) for c in iter_chunks("asset", data, 1 << 20)]
    info = stub.LoadAvatar(iter(messages))
    assert len(info.joint_names) == 64
    jaw = [0.25, 0.0, 0.0]
    assert np.array_equal(render(stub, "anny-upload", jaw_rotation=jaw), render(stub, jaw_rotation=jaw))


def test_a_template_of_another_topology_gives_no_skeleton(tmp_path):
    from trillium.avatar.core import save_asset

    library = TemplateLibrary(TEMPLATES)
    assert ANNY in library.names
    procedural = load_asset(REPO / "assets" / "avatars" / "procedural-head" / "avatar.safetensors")
    impostor = dataclasses.replace(procedural, template=dataclasses.replace(procedural.template, name=ANNY))
    save_asset(impostor, tmp_path / "impostor.safetensors")
    avatar = parse_asset("impostor", "", (tmp_path / "impostor.safetensors").read_bytes(), templates=library)
    assert avatar.rig is None and avatar.joint_names == () and not avatar.has_jaw
    real = parse_asset(ANNY, "", ANNY_ASSET.read_bytes(), templates=library)
    assert real.has_jaw and not real.jaw_from_audio  # its ARKit jawOpen already opens the jaw
    assert parse_asset(ANNY, "", ANNY_ASSET.read_bytes()).rig is None  # no library, no skeleton
