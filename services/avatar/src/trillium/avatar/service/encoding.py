"""Frame encoders: RAW_RGB8, JPEG and PNG (Pillow) per frame; H.264 (PyAV libx264) per stream."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from PIL import Image

from trillium.avatar.v1 import avatar_pb2

ENCODING_LABELS = {
    avatar_pb2.FRAME_ENCODING_RAW_RGB8: "raw_rgb8",
    avatar_pb2.FRAME_ENCODING_JPEG: "jpeg",
    avatar_pb2.FRAME_ENCODING_PNG: "png",
    avatar_pb2.FRAME_ENCODING_H264: "h264",
}


def encode_image(rgb: np.ndarray, encoding: int, jpeg_quality: int = 90) -> bytes:
    """Bytes of one [H, W, 3] uint8 frame as RAW_RGB8 (row-major), JPEG or PNG."""
    if encoding == avatar_pb2.FRAME_ENCODING_RAW_RGB8:
        return np.ascontiguousarray(rgb).tobytes()
    buffer = io.BytesIO()
    if encoding == avatar_pb2.FRAME_ENCODING_JPEG:
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=jpeg_quality)
    elif encoding == avatar_pb2.FRAME_ENCODING_PNG:
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    else:
        raise ValueError(f"encoding: {encoding} is not a still-image encoding")
    return buffer.getvalue()


class H264Encoder:
    """libx264 (ultrafast, zerolatency) producing one Annex-B access unit per frame.

    ``force_keyframe`` makes the next frame an IDR frame (used after a gap, e.g. dropped frames).
    """

    def __init__(self, width: int, height: int, fps: float, gop: int = 50) -> None:
        import av

        self.context = av.CodecContext.create("libx264", "w")
        self.context.width, self.context.height = width, height
        self.context.pix_fmt = "yuv420p"
        self.context.time_base = Fraction(1, 1000)
        self.context.framerate = Fraction(fps).limit_denominator(1000)
        self.context.gop_size = gop
        self.context.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23", "bframes": "0"}
        self._av = av
        self._pts = 0
        self._fps = fps
        self.force_keyframe = True

    def encode(self, rgb: np.ndarray) -> tuple[bytes, bool]:
        """(access unit bytes, keyframe) for one [H, W, 3] uint8 frame."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = round(self._pts * 1000 / self._fps)
        self._pts += 1
        if self.force_keyframe:
            frame.pict_type = self._av.video.frame.PictureType.I
            self.force_keyframe = False
        packets = self.context.encode(frame)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)
