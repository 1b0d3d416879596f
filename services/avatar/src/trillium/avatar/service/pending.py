"""Frames waiting to be rendered, bounded: the render-side half of Animate's back-pressure.

Input completes frames (:class:`FrameSpan`) faster than a slow renderer can draw them; without a
bound the backlog, and the lag behind a live client, grows without limit. :class:`PendingFrames`
holds at most ``limit`` frames (producers wait for :meth:`PendingFrames.room`), stored as spans of
consecutive frames, and :meth:`PendingFrames.skip_before` drops the *oldest* frames whose time has
passed (real-time pacing: a stale frame is worth less than the newest, which is always kept). Frames
keep their index, so timestamps (``index / fps``) stay correct across skips.
"""

from __future__ import annotations

from collections import deque

from trillium.avatar.service.clock import FrameSpan
from trillium.avatar.service.scene import Motion


class PendingFrames:
    """FIFO of at most ``limit`` frames stored as spans (O(spans) memory). Not thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._spans: deque[FrameSpan] = deque()
        self.count = 0
        self.peak = 0

    def __len__(self) -> int:
        return self.count

    def room(self) -> int:
        """Frames that can still be added."""
        return self.limit - self.count

    def add(self, span: FrameSpan) -> None:
        """Append ``span`` (at most :meth:`room` frames, later than every pending frame)."""
        if len(span) > self.room():
            raise ValueError(f"{len(span)} frames do not fit: room for {self.room()} of {self.limit}")
        if len(span):
            self._spans.append(span)
            self.count += len(span)
            self.peak = max(self.peak, self.count)

    def pop(self) -> tuple[int, float, Motion] | None:
        """(index, timestamp, motion) of the oldest frame, or None when empty."""
        if not self._spans:
            return None
        return next(iter(self._drop_front(1)))

    def skip_before(self, seconds: float, keep_last: bool = True) -> int:
        """Drop the oldest frames earlier than ``seconds`` (index < seconds * fps); with ``keep_last``
        the newest frame stays even when stale. Returns the number dropped."""
        skipped = 0
        while self._spans:
            stale = self._spans[0].count_before(seconds)
            if keep_last:
                stale = min(stale, self.count - 1)
            if stale <= 0:
                break
            skipped += len(self._drop_front(stale))
        return skipped

    def clear(self) -> None:
        self._spans.clear()
        self.count = 0

    def _drop_front(self, count: int) -> FrameSpan:
        """Remove and return the first ``count`` frames of the first span."""
        head, rest = self._spans[0].split(count)
        if len(rest):
            self._spans[0] = rest
        else:
            self._spans.popleft()
        self.count -= len(head)
        return head
