"""ListAvatars, LoadAvatar and RenderFrame over real gRPC."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from trillium.avatar.v1 import avatar_pb2
from trillium.servicekit.chunks import blob_header, iter_chunks

ASSET = (
    __import__("pathlib").Path(__file__).resolve().parents[3]
    / "assets/avatars/procedural-head/avatar.safetensors"
)
AVATAR = "procedural-head"


def settings(encoding=avatar_pb2.FRAME_ENCODING_RAW_RGB8, width=64, height=48, **kw):
    return avatar_pb2.RenderSettings(width=width, height=height, encoding=encoding, **kw)


def decode(frame: avatar_pb2.Frame) -> np.ndarray:
    if frame.encoding == avatar_pb2.FRAME_ENCODING_RAW_RGB8:
        return np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
    return np.asarray(Image.open(io.BytesIO(frame.data)).convert("RGB"))


def upload(
    stub, avatar_id: str, data: bytes, header_data: bytes | None = None, *, replace=False, chunk=50_000
):
    header = avatar_pb2.LoadAvatarHeader(
        avatar_id=avatar_id, display_name=avatar_id.title(), replace=replace,
        blob=blob_header("asset", data if header_data is None else header_data, chunk_bytes=chunk),
    )  # fmt: skip
    messages = [avatar_pb2.LoadAvatarRequest(header=header)]
    messages += [avatar_pb2.LoadAvatarRequest(chunk=c) for c in iter_chunks("asset", data, chunk)]
    return stub.LoadAvatar(iter(messages))


def code_and_message(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_list_shows_the_default_avatar(stub):
    avatars = {a.avatar_id: a for a in stub.ListAvatars(avatar_pb2.ListAvatarsRequest()).avatars}
    head = avatars[AVATAR]
    assert head.kind == avatar_pb2.AVATAR_KIND_HEAD
    assert head.num_gaussians == 1280
    assert "jawOpen" in head.expression_names
    assert head.size_bytes == ASSET.stat().st_size
    assert "motion-translator" not in avatars  # model weights are not an avatar


def test_upload_round_trip_renders(stub):
    data = ASSET.read_bytes()
    info = upload(stub, "uploaded-head", data)
    assert info.avatar_id == "uploaded-head" and info.display_name == "Uploaded-Head"
    assert info.sha256 == __import__("hashlib").sha256(data).hexdigest()
    listed = [a.avatar_id for a in stub.ListAvatars(avatar_pb2.ListAvatarsRequest()).avatars]
    assert "uploaded-head" in listed
    frame = stub.RenderFrame(avatar_pb2.RenderFrameRequest(avatar_id="uploaded-head", settings=settings()))
    original = stub.RenderFrame(avatar_pb2.RenderFrameRequest(avatar_id=AVATAR, settings=settings()))
    assert np.array_equal(decode(frame), decode(original))
    assert upload(stub, "uploaded-head", data, replace=True).avatar_id == "uploaded-head"


def test_upload_rejections_register_nothing(stub):
    data = ASSET.read_bytes()
    corrupt = bytearray(data)
    corrupt[8:40] = b"{" * 32  # break the safetensors JSON header
    cases = {
        "bad-digest": (data, data[:-1] + b"x", grpc.StatusCode.INVALID_ARGUMENT, "header.blob.sha256"),
        "truncated": (data[:1000], data, grpc.StatusCode.INVALID_ARGUMENT, "header.blob.total_bytes"),
        "corrupt": (bytes(corrupt), None, grpc.StatusCode.INVALID_ARGUMENT, "not a valid avatar asset"),
        "garbage": (b"hello" * 100, None, grpc.StatusCode.INVALID_ARGUMENT, "not a valid avatar asset"),
    }
    for avatar_id, (sent, announced, code, text) in cases.items():
        got, message = code_and_message(lambda s=sent, a=announced, i=avatar_id: upload(stub, i, s, a))
        assert got == code, (avatar_id, message)
        assert text in message, (avatar_id, message)
    listed = {a.avatar_id for a in stub.ListAvatars(avatar_pb2.ListAvatarsRequest()).avatars}
    assert listed.isdisjoint(cases)
    got, message = code_and_message(lambda: upload(stub, AVATAR, data))
    assert got == grpc.StatusCode.ALREADY_EXISTS and "header.avatar_id" in message


@pytest.mark.parametrize(
    "encoding",
    [avatar_pb2.FRAME_ENCODING_JPEG, avatar_pb2.FRAME_ENCODING_PNG, avatar_pb2.FRAME_ENCODING_RAW_RGB8],
)
def test_render_frame_decodes_and_follows_jaw(stub, encoding):
    def frame(jaw: float) -> np.ndarray:
        request = avatar_pb2.RenderFrameRequest(
            avatar_id=AVATAR,
            motion=avatar_pb2.MotionParams(expression={"jawOpen": jaw}),
            settings=settings(encoding),
        )
        response = stub.RenderFrame(request)
        assert (response.width, response.height, response.encoding) == (64, 48, encoding)
        return decode(response)

    closed, opened = frame(0.0), frame(1.0)
    assert closed.shape == (48, 64, 3)
    assert closed.mean() > 20  # the head is in view, not a black frame
    assert np.abs(closed.astype(int) - opened.astype(int)).mean() > 1.0


def test_jpeg_is_the_default_encoding(stub):
    frame = stub.RenderFrame(avatar_pb2.RenderFrameRequest(avatar_id=AVATAR, settings=settings(0)))
    assert frame.encoding == avatar_pb2.FRAME_ENCODING_JPEG and frame.data[:2] == b"\xff\xd8"


NAN = float("nan")


@pytest.mark.parametrize(
    ("request_kwargs", "code", "field"),
    [
        ({"avatar_id": "nobody"}, grpc.StatusCode.NOT_FOUND, "avatar_id"),
        ({"settings": settings(width=8)}, grpc.StatusCode.INVALID_ARGUMENT, "settings.width"),
        ({"settings": settings(height=4096)}, grpc.StatusCode.INVALID_ARGUMENT, "settings.height"),
        ({"settings": settings(width=65)}, grpc.StatusCode.INVALID_ARGUMENT, "settings.width"),
        (
            {"settings": settings(avatar_pb2.FRAME_ENCODING_H264)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.encoding",
        ),
        (
            {"motion": avatar_pb2.MotionParams(expression={"jawOpn": 0.1})},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.expression['jawOpn']",
        ),
        (
            {"motion": avatar_pb2.MotionParams(expression={"jawOpen": NAN})},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.expression['jawOpen']",
        ),
        (
            {"motion": avatar_pb2.MotionParams(head_rotation=[0.0, float("inf"), 0.0])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.head_rotation",
        ),
        (
            {"motion": avatar_pb2.MotionParams(jaw_rotation=[0.1, 0.0])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.jaw_rotation",
        ),
        (
            {"motion": avatar_pb2.MotionParams(head_translation=[0.0] * 4)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.head_translation",
        ),
        (
            {"motion": avatar_pb2.MotionParams(body_pose=[0.0] * 3)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.body_pose",
        ),
        (
            {"settings": settings(camera=avatar_pb2.Camera(yaw_degrees=NAN))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.camera.yaw_degrees",
        ),
        (
            {"settings": settings(camera=avatar_pb2.Camera(view_matrix=[1.0] * 15))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.camera.view_matrix",
        ),
        (
            {"settings": settings(background=[0.0, 2.0, 0.0])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "settings.background",
        ),
        ({"settings": settings(jpeg_quality=101)}, grpc.StatusCode.INVALID_ARGUMENT, "settings.jpeg_quality"),
    ],
)
def test_render_frame_rejects_bad_input(stub, request_kwargs, code, field):
    request = avatar_pb2.RenderFrameRequest(avatar_id=AVATAR, settings=settings())
    for key, value in request_kwargs.items():
        if isinstance(value, str):
            setattr(request, key, value)
        else:
            getattr(request, key).CopyFrom(value)
    got, message = code_and_message(lambda: stub.RenderFrame(request))
    assert got == code, message
    assert message.startswith(field), message


def test_head_rotation_and_camera_change_the_image(stub):
    base = decode(stub.RenderFrame(avatar_pb2.RenderFrameRequest(avatar_id=AVATAR, settings=settings())))
    turned = stub.RenderFrame(
        avatar_pb2.RenderFrameRequest(
            avatar_id=AVATAR,
            motion=avatar_pb2.MotionParams(head_rotation=[0.0, 0.8, 0.0]),
            settings=settings(),
        )
    )
    side = stub.RenderFrame(
        avatar_pb2.RenderFrameRequest(
            avatar_id=AVATAR, settings=settings(camera=avatar_pb2.Camera(yaw_degrees=90.0))
        )
    )
    assert np.abs(decode(turned).astype(int) - base).mean() > 1.0
    assert np.abs(decode(side).astype(int) - base).mean() > 1.0
