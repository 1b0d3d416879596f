"""Prometheus metrics of the avatar service (render buckets sit on the 120/90/60/30 fps edges)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RENDER_BUCKETS = (0.004, 0.008, 0.0111, 0.0167, 0.0333, 0.05, 0.1, 0.25, 0.5, 1.0)
ENCODE_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.0167, 0.0333, 0.05, 0.1, 0.25)
FIRST_FRAME_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
SCENE_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
GAUSSIAN_BUCKETS = (1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7)


@dataclass(frozen=True)
class AvatarMetrics:
    frame_render_seconds: Histogram
    frame_encode_seconds: Histogram
    time_to_first_frame: Histogram
    frames_rendered: Counter
    frames_dropped: Counter
    active_streams: Gauge
    scene_load_seconds: Histogram
    gaussians: Histogram
    gpu_memory_used: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AvatarMetrics:
        return cls(
            frame_render_seconds=Histogram(
                "avatar_frame_render_seconds",
                "Time to render one frame.",
                ("renderer",),
                buckets=RENDER_BUCKETS,
                registry=registry,
            ),
            frame_encode_seconds=Histogram(
                "avatar_frame_encode_seconds",
                "Time to encode one frame.",
                ("encoding",),
                buckets=ENCODE_BUCKETS,
                registry=registry,
            ),
            time_to_first_frame=Histogram(
                "avatar_time_to_first_frame_seconds",
                "Stream start (or first audio) to first frame sent.",
                buckets=FIRST_FRAME_BUCKETS,
                registry=registry,
            ),
            frames_rendered=Counter("avatar_frames_rendered", "Frames rendered.", registry=registry),
            frames_dropped=Counter(
                "avatar_frames_dropped",
                "Frames dropped (back-pressure, late input).",
                ("reason",),
                registry=registry,
            ),
            active_streams=Gauge("avatar_active_streams", "Animate streams open.", registry=registry),
            scene_load_seconds=Histogram(
                "avatar_scene_load_seconds",
                "Time to validate and load an avatar.",
                buckets=SCENE_LOAD_BUCKETS,
                registry=registry,
            ),
            gaussians=Histogram(
                "avatar_gaussians",
                "Gaussians per loaded avatar.",
                buckets=GAUSSIAN_BUCKETS,
                registry=registry,
            ),
            gpu_memory_used=Gauge("avatar_gpu_memory_used_bytes", "GPU memory in use.", registry=registry),
        )


def create_metrics(registry: CollectorRegistry) -> AvatarMetrics:
    return AvatarMetrics.create(registry)
