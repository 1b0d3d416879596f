"""Animate back-pressure without timing: a fake wall clock that only a (fake) render advances.

Real-time pacing skips frames that are more than ``max_render_lag`` past their due time (never the
newest); both pacings keep at most ``max_pending`` frames waiting to be rendered and at most
``max_queued`` rendered frames waiting to be sent.
"""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from trillium.avatar.service.animate import AnimateSession, AnimateSettings, MotionModel
from trillium.avatar.service.clock import FrameClock, FrameSpan
from trillium.avatar.service.metrics import AvatarMetrics
from trillium.avatar.service.pending import PendingFrames
from trillium.avatar.service.registry import AvatarRegistry
from trillium.avatar.service.scene import Motion
from trillium.avatar.service.streaming import DropOldestQueue, RenderWorker
from trillium.avatar.v1 import avatar_pb2

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "avatars"
STILL = Motion(np.zeros(0, np.float32), np.zeros(3), np.zeros(3), np.zeros(3))
PIXEL = np.zeros((1, 1, 3), np.uint8)


class FakeClock:
    """A wall clock that moves only when told to (``cost`` seconds per fake render)."""

    def __init__(self, cost: float = 0.0) -> None:
        self.now, self.cost = 0.0, cost

    def __call__(self) -> float:
        return self.now

    def render(self, motion: Motion) -> np.ndarray:
        self.now += self.cost
        return PIXEL


def drain(queue: DropOldestQueue) -> list:
    async def collect() -> list:
        items = []
        while (item := await queue.get()) is not None:
            items.append(item)
        return items

    return collect()


def test_frame_clock_spans_equal_the_frame_by_frame_reference():
    rng = random.Random(0)
    for fps in (7.0, 10.0, 25.0, 29.97, 60.0):
        clock = FrameClock(fps)
        t, reference_next = rng.uniform(0, 0.3), None
        for _ in range(50):
            start = clock.next_index
            if clock._latest is not None:
                reference_next = clock._first_not_due_reference(start, t, inclusive=False)
            span = clock.advance(t, STILL)
            assert span.start == start and (reference_next is None or span.stop == reference_next)
            assert [frame[1] for frame in span] == [i / fps for i in range(span.start, span.stop)]
            t += rng.choice([0.0, 1 / fps, rng.uniform(0, 0.5)])
        expected = clock._first_not_due_reference(clock.next_index, t, inclusive=False)
        assert clock.advance(t, STILL).stop == expected


def test_a_day_long_pause_is_one_span_not_millions_of_frames():
    clock = FrameClock(60.0)
    assert len(clock.advance(0.0, STILL)) == 0
    span = clock.advance(86_400.0, STILL)
    assert (span.start, span.stop, len(span)) == (0, 5_184_000, 5_184_000)
    assert len(clock.finish()) == 1 and clock.next_index == 5_184_001


def test_pending_frames_skip_the_oldest_stale_frames_but_keep_the_newest():
    pending = PendingFrames(limit=10)
    pending.add(FrameSpan(0, 4, 10.0, STILL))
    pending.add(FrameSpan(4, 6, 10.0, STILL))
    with pytest.raises(ValueError, match="do not fit"):
        pending.add(FrameSpan(6, 11, 10.0, STILL))
    assert pending.skip_before(0.25) == 3  # frames 0, 1, 2 are before 0.25 s
    assert pending.pop()[:2] == (3, 0.3)
    assert pending.skip_before(99.0) == 1 and len(pending) == 1  # frame 5, the newest, stays
    assert pending.skip_before(99.0, keep_last=False) == 1 and pending.pop() is None
    assert pending.peak == 6


def test_realtime_worker_skips_late_frames_and_always_renders_the_newest():
    clock = FakeClock(cost=0.5)  # rendering takes 4 frame intervals at 8 fps (binary fractions: exact)

    async def scenario():
        loop = asyncio.get_running_loop()
        skips: list[int] = []
        out = DropOldestQueue(100, loop, lambda: None)
        worker = RenderWorker(
            clock.render, out, loop, max_pending=10, max_lag=0.1875, on_skip=skips.append, now=clock
        )
        await worker.submit(FrameSpan(0, 10, 8.0, STILL))  # all 10 fit: nothing waits
        worker.finish()
        frames = await drain(out)
        return frames, skips, worker

    frames, skips, worker = asyncio.run(scenario())
    # frame 0 anchors stream time 0 to its render end (0.5); frame t is late once
    # now > 0.5 + t + 0.1875. Picking at 0.5: keep 1; at 1.0: skip 2, keep 3; at 1.5: skip 4..6,
    # keep 7; at 2.0: 8 and 9 are late, 8 is skipped, 9 is the newest and always rendered
    assert [f.index for f in frames] == [0, 1, 3, 7, 9]
    assert [f.timestamp for f in frames] == [0.0, 0.125, 0.375, 0.875, 1.125]
    assert sum(skips) == worker.skipped == 5 and worker.rendered == 5
    assert worker.peak_pending == 10


def test_realtime_submit_skips_frames_that_arrive_already_late():
    clock = FakeClock()

    async def scenario():
        loop = asyncio.get_running_loop()
        out = DropOldestQueue(100, loop, lambda: None)
        worker = RenderWorker(clock.render, out, loop, max_pending=4, max_lag=0.1875, now=clock)
        await worker.submit(FrameSpan(0, 1, 8.0, STILL))
        first = await out.get()  # rendered at now = 0: the anchor
        clock.now = 2.0  # the producer stalls for 2 s, then sends 2.5 s of frames at once
        await worker.submit(FrameSpan(1, 21, 8.0, STILL))
        worker.finish()
        return [first, *await drain(out)], worker

    frames, worker = asyncio.run(scenario())
    # at now = 2.0 every frame before 2.0 - 0.1875 s is late: 1..14 are skipped, 15..20 rendered
    # (four fit at once; the submit waits for room for the last two)
    assert [f.index for f in frames] == [0, *range(15, 21)]
    assert worker.skipped == 14 and worker.peak_pending == 4


@pytest.mark.parametrize("max_lag", [None, 0.1])  # offline; real time with input ahead of real time
def test_pending_frames_never_exceed_the_bound_and_early_input_is_not_dropped(max_lag):
    gate = threading.Semaphore(0)

    def render(motion: Motion) -> np.ndarray:
        gate.acquire(timeout=30)  # the test lets one frame render at a time
        return PIXEL

    async def scenario():
        loop = asyncio.get_running_loop()
        out = DropOldestQueue(1, loop, lambda: None, drop=False)
        worker = RenderWorker(render, out, loop, max_pending=3, max_lag=max_lag, now=lambda: 0.0)
        submitting = asyncio.create_task(worker.submit(FrameSpan(0, 40, 10.0, STILL)))
        frames = []
        await asyncio.sleep(0)
        while len(frames) < 40:
            # the reader waits for room: done only once 37 frames left pending (<= 2 not yet received)
            assert not submitting.done() or len(frames) >= 35
            gate.release()
            frames.append(await out.get())
        await submitting
        worker.finish()
        assert await out.get() is None
        return frames, worker, out

    frames, worker, out = asyncio.run(scenario())
    assert [f.index for f in frames] == list(range(40))
    assert worker.peak_pending == 3 and worker.skipped == 0
    assert out.peak == 1 and out.dropped == 0


def test_blocking_queue_waits_for_the_consumer_and_close_releases_a_waiting_producer():
    async def scenario():
        loop = asyncio.get_running_loop()
        queue = DropOldestQueue(2, loop, lambda: None, drop=False)
        producer = threading.Thread(target=lambda: [queue.put(i) for i in range(10)])
        producer.start()
        received = [await queue.get() for _ in range(10)]
        stuck = DropOldestQueue(1, loop, lambda: None, drop=False)
        stuck.put("a")
        waiting = threading.Thread(target=stuck.put, args=("b",))
        waiting.start()
        stuck.close()  # e.g. the client cancelled: the renderer must not hang
        await asyncio.to_thread(waiting.join, 10)
        producer.join(10)
        return received, queue, waiting.is_alive(), await stuck.get(), await stuck.get()

    received, queue, alive, first, last = asyncio.run(scenario())
    assert received == list(range(10)) and queue.peak <= 2 and queue.dropped == 0
    assert not alive and (first, last) == ("a", None)


class SlowSession(AnimateSession):
    """An Animate session whose renderer costs ``clock.cost`` seconds of a fake wall clock."""

    def __init__(self, settings, metrics, clock: FakeClock) -> None:
        super().__init__(settings, metrics, MotionModel(Path("absent")), now=clock)
        self.fake = clock

    def _render(self, motion: Motion) -> np.ndarray:
        self.metrics.frames_rendered.inc()
        self.fake.render(motion)
        return np.zeros((self.settings.camera.height, self.settings.camera.width, 3), np.uint8)


def run_session(pacing: int, cost: float) -> tuple[list, avatar_pb2.StreamStats, CollectorRegistry]:
    registry = AvatarRegistry()
    registry.load_directory(ASSETS)
    config = avatar_pb2.AnimateConfig(
        avatar_id="procedural-head",
        fps=30.0,
        max_queued_frames=256,  # the in-process reader is fast; only render lag is at play
        pacing=pacing,
        settings=avatar_pb2.RenderSettings(width=16, height=16, encoding=avatar_pb2.FRAME_ENCODING_RAW_RGB8),
    )
    prometheus = CollectorRegistry()
    settings = AnimateSettings.from_config(config, registry)
    session = SlowSession(settings, AvatarMetrics.create(prometheus), FakeClock(cost))

    def keyframe(t: float) -> avatar_pb2.AnimateRequest:
        frame = avatar_pb2.MotionFrame(motion=avatar_pb2.MotionParams(), timestamp_seconds=t)
        return avatar_pb2.AnimateRequest(motion=frame)

    async def requests():
        for request in (keyframe(0.0), keyframe(2.0), avatar_pb2.AnimateRequest(end={})):
            yield request

    async def scenario():
        return [response async for response in session.run(requests())]

    responses = asyncio.run(scenario())
    frames = [r.frame for r in responses if r.WhichOneof("event") == "frame"]
    return frames, responses[-1].stats, prometheus


def test_realtime_session_skips_frames_of_a_slow_renderer_and_counts_them():
    # 2 s at 30 fps = 61 frames; each render costs 0.1 s (3 frame intervals) of the fake clock
    frames, stats, prometheus = run_session(avatar_pb2.PACING_REALTIME, cost=0.1)
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[0] == 0 and indices[-1] == 60
    assert np.allclose([f.timestamp_seconds for f in frames], np.array(indices) / 30)
    assert stats.frames_dropped_render_lag > 0 and stats.frames_dropped == stats.frames_dropped_render_lag
    assert stats.frames_rendered == len(frames) == 61 - stats.frames_dropped_render_lag
    counted = prometheus.get_sample_value("avatar_frames_dropped_total", {"reason": "render_lag"})
    assert counted == stats.frames_dropped_render_lag
    rendered = prometheus.get_sample_value("avatar_frames_rendered_total")
    assert rendered == stats.frames_rendered


def test_offline_session_renders_every_frame_of_a_slow_renderer():
    frames, stats, prometheus = run_session(avatar_pb2.PACING_OFFLINE, cost=0.1)
    assert [f.index for f in frames] == list(range(61))
    assert stats.frames_dropped == stats.frames_dropped_render_lag == 0
    assert not prometheus.get_sample_value("avatar_frames_dropped_total", {"reason": "render_lag"})
