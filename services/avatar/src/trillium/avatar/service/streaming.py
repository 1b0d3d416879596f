"""Animate streams: frames due -> bounded pending frames -> render thread -> bounded frame queue -> encoder.

Both stages are bounded, so memory never grows with a slow renderer or a slow client:

- frames whose input has arrived wait in :class:`PendingFrames` (at most ``max_pending_frames``;
  when full the reader waits, and so stops reading input: gRPC flow control holds the client back);
  in real time a frame more than ``max_render_lag_seconds`` past its due time is skipped, oldest
  first, never the newest (``reason="render_lag"``), so a renderer that falls behind catches up;
- rendered frames wait in a :class:`DropOldestQueue` (at most ``max_queued_frames``); in real time
  the oldest are dropped when the client reads slowly (``reason="backpressure"``), offline the
  renderer waits for the client.

Frames are encoded after the queue so an H.264 stream stays decodable: after a gap the next frame is
an IDR. :class:`FrameClock` and :class:`FrameSpan` (the fps grid) live in ``clock.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trillium.avatar.service.clock import FrameClock, FrameSpan
from trillium.avatar.service.pending import PendingFrames
from trillium.avatar.service.scene import Motion

__all__ = ["DropOldestQueue", "FrameClock", "FrameSpan", "RenderWorker", "RenderedFrame"]


def wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """Set ``event`` from any thread (a no-op once the loop is closed, e.g. after a test's loop)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(event.set)


@dataclass(frozen=True)
class RenderedFrame:
    index: int
    timestamp: float
    rgb: np.ndarray
    render_seconds: float


class DropOldestQueue:
    """Thread -> asyncio queue of at most ``maxlen`` items.

    ``drop=True``: ``put`` drops the oldest item when full (counted, ``on_drop``). ``drop=False``:
    ``put`` blocks the calling thread until the consumer makes room. After :meth:`close` puts are
    discarded (a blocked ``put`` returns), and ``get`` drains what is left, then returns None.
    """

    def __init__(
        self,
        maxlen: int,
        loop: asyncio.AbstractEventLoop,
        on_drop: Callable[[], None],
        drop: bool = True,
    ) -> None:
        self.maxlen, self.drop, self._loop, self._on_drop = maxlen, drop, loop, on_drop
        self._items: deque = deque()
        self._room = threading.Condition()
        self._event = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self.peak = 0

    def put(self, item) -> None:
        with self._room:
            while not self.drop and len(self._items) >= self.maxlen and not self._closed:
                self._room.wait()
            if self._closed:
                return
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
                self._on_drop()
            self._items.append(item)
            self.peak = max(self.peak, len(self._items))
        wake(self._loop, self._event)

    def close(self) -> None:
        with self._room:
            self._closed = True
            self._room.notify_all()
        wake(self._loop, self._event)

    async def get(self):
        """Next item, or None once closed and empty."""
        while True:
            self._event.clear()
            with self._room:
                if self._items:
                    item = self._items.popleft()
                    self._room.notify_all()
                    return item
                if self._closed:
                    return None
            await self._event.wait()


class RenderWorker:
    """A thread rendering the frames of a bounded :class:`PendingFrames` into a :class:`DropOldestQueue`.

    The reader (on the event loop) awaits :meth:`submit`, which waits while ``max_pending`` frames are
    pending. With ``max_lag`` (real-time pacing) frames have a deadline: the first frame rendered
    anchors stream time to the wall clock ``now()`` (as a player starts playback when the first
    frame arrives, so a cold first render costs no frames), frame ``t`` is due at
    ``anchor_wall + (t - anchor_t)``, and a frame still pending ``max_lag`` seconds after that is
    skipped (``on_skip(count)``), oldest first, unless it is the newest; skipping happens when the
    renderer picks its next frame and when a submit arrives. Without ``max_lag`` (offline) every
    frame is rendered.
    """

    def __init__(
        self,
        render: Callable[[Motion], np.ndarray],
        out: DropOldestQueue,
        loop: asyncio.AbstractEventLoop,
        max_pending: int,
        *,
        max_lag: float | None = None,
        on_skip: Callable[[int], None] = lambda count: None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render, self._out, self._loop = render, out, loop
        self._max_lag, self._on_skip, self._now = max_lag, on_skip, now
        self._pending = PendingFrames(max_pending)
        self._anchor: tuple[float, float] | None = None  # (stream seconds, wall seconds)
        self._wake = threading.Condition()
        self._room = asyncio.Event()
        self._done = False
        self.error: BaseException | None = None
        self.rendered = 0
        self.skipped = 0
        self.render_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="avatar-render", daemon=True)
        self._thread.start()

    @property
    def peak_pending(self) -> int:
        """Most frames ever waiting to be rendered (never above ``max_pending``)."""
        return self._pending.peak

    async def submit(self, span: FrameSpan) -> None:
        """Queue ``span``'s frames, waiting (without blocking the loop) while the bound is reached."""
        while len(span):
            self._room.clear()
            skipped = 0
            with self._wake:
                if self._done:
                    return
                if self._max_lag is not None and self._anchor is not None:
                    cutoff = self._stale_before()
                    skipped = self._pending.skip_before(cutoff, keep_last=False)  # span is newer
                    stale, span = span.split(min(span.count_before(cutoff), len(span) - 1))
                    skipped += len(stale)
                    self.skipped += skipped
                head, span = span.split(self._pending.room())
                if len(head):
                    self._pending.add(head)
                    self._wake.notify()
            if skipped:
                self._on_skip(skipped)
            if len(span) and not len(head):
                await self._room.wait()

    def finish(self, discard: bool = False) -> None:
        """No more frames; ``discard`` drops the pending ones (stream cancelled or failed)."""
        with self._wake:
            if discard:
                self._pending.clear()
            self._done = True
            self._wake.notify()
        wake(self._loop, self._room)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _stale_before(self) -> float:
        """Stream time before which pending frames are past their deadline plus ``max_lag``."""
        stream_t, wall = self._anchor
        return stream_t + (self._now() - wall) - self._max_lag

    def _next_job(self) -> tuple[tuple[int, float, Motion] | None, int]:
        """(the frame to render next or None at the end, frames skipped as stale)."""
        with self._wake:
            while not len(self._pending) and not self._done:
                self._wake.wait()
            skipped = 0
            if self._max_lag is not None and self._anchor is not None and len(self._pending) > 1:
                skipped = self._pending.skip_before(self._stale_before(), keep_last=True)
                self.skipped += skipped
            return self._pending.pop(), skipped

    def _run(self) -> None:
        try:
            while True:
                job, skipped = self._next_job()
                if skipped:
                    self._on_skip(skipped)
                if job is None:
                    return
                wake(self._loop, self._room)
                index, timestamp, motion = job
                start = time.perf_counter()
                rgb = self._render(motion)
                seconds = time.perf_counter() - start
                self.rendered += 1
                self.render_seconds += seconds
                if self._anchor is None:
                    with self._wake:
                        self._anchor = (timestamp, self._now())
                self._out.put(RenderedFrame(index, timestamp, rgb, seconds))
        except BaseException as error:  # surfaced by the sender as INTERNAL
            self.error = error
        finally:
            self._out.close()
