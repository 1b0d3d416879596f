"""Animate streams: input keyframes -> frames on the fps grid -> bounded drop-oldest queue -> encoder.

A worker thread renders; the queue between renderer and sender holds at most ``max_queued_frames``
raw frames and drops the oldest when the client reads slowly (never queue unboundedly). Frames are
encoded after the queue so an H.264 stream stays decodable: after a drop the next frame is an IDR.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trillium.avatar.service.scene import Motion


@dataclass(frozen=True)
class RenderedFrame:
    index: int
    timestamp: float
    rgb: np.ndarray
    render_seconds: float


class DropOldestQueue:
    """Thread -> asyncio queue of at most ``maxlen`` items; ``put`` drops the oldest when full."""

    def __init__(self, maxlen: int, loop: asyncio.AbstractEventLoop, on_drop: Callable[[], None]) -> None:
        self.maxlen, self._loop, self._on_drop = maxlen, loop, on_drop
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._event = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self.peak = 0

    def put(self, item) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
                self._on_drop()
            self._items.append(item)
            self.peak = max(self.peak, len(self._items))
        self._loop.call_soon_threadsafe(self._event.set)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._loop.call_soon_threadsafe(self._event.set)

    async def get(self):
        """Next item, or None once closed and empty."""
        while True:
            self._event.clear()
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    return None
            await self._event.wait()


class FrameClock:
    """Turns timestamped motion keyframes into frames at ``fps``: frame i (t = i / fps) uses the latest
    keyframe at or before t. Keyframes must arrive in time order."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.next_index = 0
        self._latest: tuple[float, Motion] | None = None

    def advance(self, timestamp: float, motion: Motion) -> list[tuple[int, float, Motion]]:
        """Frames completed by a keyframe at ``timestamp``: those before it, from the previous one."""
        due = self._until(timestamp, inclusive=False)
        self._latest = (timestamp, motion)
        return due

    def finish(self) -> list[tuple[int, float, Motion]]:
        """At end of input: the frames up to and including the last keyframe's time."""
        return self._until(self._latest[0], inclusive=True) if self._latest else []

    def _until(self, timestamp: float, inclusive: bool) -> list[tuple[int, float, Motion]]:
        frames = []
        while self._latest is not None:
            t = self.next_index / self.fps
            if t > timestamp + 1e-9 or (not inclusive and t >= timestamp - 1e-9):
                break
            frames.append((self.next_index, t, self._latest[1]))
            self.next_index += 1
        if self._latest is None:
            # before the first keyframe nothing can be rendered; frames start at its time
            self.next_index = max(self.next_index, int(np.ceil(timestamp * self.fps - 1e-9)))
        return frames


class RenderWorker:
    """A thread rendering (index, timestamp, motion) jobs into a :class:`DropOldestQueue`."""

    def __init__(self, render: Callable[[Motion], np.ndarray], out: DropOldestQueue) -> None:
        self._render, self._out = render, out
        self._jobs: deque = deque()
        self._wake = threading.Condition()
        self._done = False
        self.error: BaseException | None = None
        self.rendered = 0
        self.render_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="avatar-render", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[tuple[int, float, Motion]]) -> None:
        with self._wake:
            self._jobs.extend(jobs)
            self._wake.notify()

    def finish(self, discard: bool = False) -> None:
        """No more jobs; ``discard`` drops the pending ones (stream cancelled or failed)."""
        with self._wake:
            if discard:
                self._jobs.clear()
            self._done = True
            self._wake.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._jobs and not self._done:
                        self._wake.wait()
                    if not self._jobs:
                        return
                    index, timestamp, motion = self._jobs.popleft()
                start = time.perf_counter()
                rgb = self._render(motion)
                seconds = time.perf_counter() - start
                self.rendered += 1
                self.render_seconds += seconds
                self._out.put(RenderedFrame(index, timestamp, rgb, seconds))
        except BaseException as error:  # surfaced by the sender as INTERNAL
            self.error = error
        finally:
            self._out.close()
