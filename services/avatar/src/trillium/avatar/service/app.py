"""Wires the AvatarService servicer into the service kit."""

from __future__ import annotations

import asyncio
import os
import time
from importlib.metadata import version
from pathlib import Path

from grpc import aio

from trillium.avatar.service.animate import AnimateSession, AnimateSettings, MotionModel
from trillium.avatar.service.encoding import ENCODING_LABELS, encode_image
from trillium.avatar.service.metrics import AvatarMetrics, create_metrics
from trillium.avatar.service.registry import AvatarRegistry, parse_asset
from trillium.avatar.service.scene import cpu_backend, record_gpu_memory, render_rgb
from trillium.avatar.service.templates import TemplateLibrary
from trillium.avatar.service.validation import motion_params, render_settings
from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.servicekit.chunks import BlobAssembler
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = avatar_pb2.DESCRIPTOR.services_by_name["AvatarService"].full_name
AVATARS_DIR_ENV = "TRILLIUM_AVATARS_DIR"
DEFAULT_AVATARS_DIR = "./assets/avatars"
TEMPLATES_DIR_ENV = "TRILLIUM_TEMPLATES_DIR"  # default: the "templates" folder beside the avatars folder
MAX_UPLOAD_BYTES = 256 * 1024 * 1024


class AvatarServicer(avatar_pb2_grpc.AvatarServiceServicer):
    """ListAvatars, LoadAvatar (chunked upload), RenderFrame and Animate (bidirectional stream)."""

    def __init__(
        self,
        metrics: AvatarMetrics,
        avatars_dir: Path,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        templates_dir: Path | None = None,
    ):
        self.metrics = metrics
        self.templates_dir = templates_dir if templates_dir is not None else avatars_dir.parent / "templates"
        self.registry = AvatarRegistry(TemplateLibrary(self.templates_dir))
        self.avatars_dir = avatars_dir
        self.max_upload_bytes = max_upload_bytes
        self.motion_model = MotionModel(avatars_dir / "motion-translator" / "motion_translator.safetensors")

    def warm_up(self) -> None:
        start = time.perf_counter()
        loaded = self.registry.load_directory(self.avatars_dir)
        for avatar_id in loaded:
            self.metrics.gaussians.observe(self.registry.get(avatar_id).info().num_gaussians)
        if loaded:
            self.metrics.scene_load_seconds.observe(time.perf_counter() - start)

    async def ListAvatars(self, request, context) -> avatar_pb2.ListAvatarsResponse:
        return avatar_pb2.ListAvatarsResponse(avatars=[avatar.info() for avatar in self.registry.all()])

    async def LoadAvatar(self, request_iterator, context) -> avatar_pb2.AvatarInfo:
        header, assembler = None, None
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if part == "header":
                if header is not None:
                    raise ValidationError("header", "sent twice")
                header = message.header
                if not header.avatar_id:
                    raise ValidationError("header.avatar_id", "must not be empty")
                if header.avatar_id in self.registry and not header.replace:
                    self.registry.add(self.registry.get(header.avatar_id), replace=False)  # ALREADY_EXISTS
                assembler = BlobAssembler(header.blob, self.max_upload_bytes, field="header.blob")
            elif part == "chunk":
                if assembler is None:
                    raise ValidationError("header", "must come before the first chunk")
                assembler.add(message.chunk)
            else:
                raise ValidationError("part", "each message needs a header or a chunk")
        if assembler is None:
            raise ValidationError("header", "missing: the stream carried no LoadAvatarHeader")
        data = assembler.finish()
        start = time.perf_counter()
        avatar = await asyncio.to_thread(
            parse_asset, header.avatar_id, header.display_name, data, "chunk.data", self.registry.templates
        )
        self.registry.add(avatar, replace=header.replace)
        self.metrics.scene_load_seconds.observe(time.perf_counter() - start)
        self.metrics.gaussians.observe(len(avatar.asset.gaussians))
        return avatar.info()

    async def RenderFrame(self, request, context) -> avatar_pb2.Frame:
        avatar = self.registry.get(request.avatar_id)
        motion = motion_params(request.motion, avatar)
        camera, encoding, quality = render_settings(request.settings)
        renderer = "gsplat" if request.settings.renderer == avatar_pb2.RENDERER_GSPLAT else "cpu"
        backend = "gsplat" if renderer == "gsplat" else cpu_backend()

        def work() -> tuple[bytes, float, float]:
            start = time.perf_counter()
            rgb = render_rgb(avatar, motion, camera, backend)
            rendered = time.perf_counter()
            return encode_image(rgb, encoding, quality), rendered - start, time.perf_counter() - rendered

        data, render_seconds, encode_seconds = await asyncio.to_thread(work)
        self.metrics.frame_render_seconds.labels(renderer).observe(render_seconds)
        self.metrics.frame_encode_seconds.labels(ENCODING_LABELS[encoding]).observe(encode_seconds)
        self.metrics.frames_rendered.inc()
        record_gpu_memory(self.metrics, renderer)
        return avatar_pb2.Frame(
            index=0, timestamp_seconds=0.0, encoding=encoding, width=camera.width, height=camera.height,
            data=data, render_seconds=render_seconds, encode_seconds=encode_seconds, keyframe=True,
        )  # fmt: skip

    async def Animate(self, request_iterator, context):
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise ValidationError("config", "the stream ended before an AnimateConfig") from None
        if first.WhichOneof("input") != "config":
            raise ValidationError("config", "the first message must be an AnimateConfig")
        settings = AnimateSettings.from_config(first.config, self.registry)
        session = AnimateSession(settings, self.metrics, self.motion_model)
        self.metrics.active_streams.inc()
        try:
            async for response in session.run(iterator):
                yield response
        finally:
            self.metrics.active_streams.dec()


def avatars_dir() -> Path:
    return Path(os.environ.get(AVATARS_DIR_ENV, DEFAULT_AVATARS_DIR))


def templates_dir() -> Path:
    configured = os.environ.get(TEMPLATES_DIR_ENV)
    return Path(configured) if configured else avatars_dir().parent / "templates"


def register(server: aio.Server, runtime: ServiceRuntime) -> None:
    servicer = AvatarServicer(create_metrics(runtime.registry), avatars_dir(), templates_dir=templates_dir())
    runtime.avatar_servicer = servicer  # type: ignore[attr-defined] - handle for warm-up and tests
    avatar_pb2_grpc.add_AvatarServiceServicer_to_server(servicer, server)


async def warmup(runtime: ServiceRuntime) -> None:
    await asyncio.to_thread(runtime.avatar_servicer.warm_up)  # type: ignore[attr-defined]


def build_definition(settings: ServiceSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name="avatar",
        version=version("trillium-avatar-service"),
        service_names=[SERVICE_NAME],
        register=register,
        warmup=warmup,
    )
