"""The frame clock of an Animate stream: timestamped motion keyframes -> frames at ``fps``.

Frame ``i`` is at ``t = i / fps`` and shows the latest keyframe at or before ``t`` (sample and hold).
A keyframe after a pause completes many frames at once, so the frames it completes are returned as
one :class:`FrameSpan` (start, stop, motion): O(1) memory however long the pause.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from trillium.avatar.service.scene import Motion

TOLERANCE_SECONDS = 1e-9


@dataclass(frozen=True)
class FrameSpan:
    """Frames ``start .. stop - 1`` of a stream at ``fps``, all showing ``motion``; frame i is at i / fps."""

    start: int
    stop: int
    fps: float
    motion: Motion | None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[tuple[int, float, Motion]]:
        """(index, timestamp, motion) of every frame, in order."""
        for index in range(self.start, self.stop):
            yield index, index / self.fps, self.motion

    def count_before(self, seconds: float) -> int:
        """Leading frames earlier than ``seconds``: indices ``i < seconds * fps``."""
        return min(len(self), max(0, math.ceil(seconds * self.fps) - self.start))

    def split(self, count: int) -> tuple[FrameSpan, FrameSpan]:
        """(the first ``count`` frames, the rest)."""
        middle = min(self.stop, self.start + max(count, 0))
        return replace(self, stop=middle), replace(self, start=middle)


class FrameClock:
    """Turns timestamped motion keyframes into frames at ``fps``: frame i (t = i / fps) uses the latest
    keyframe at or before t. Keyframes must arrive in time order."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.next_index = 0
        self._latest: tuple[float, Motion] | None = None

    def advance(self, timestamp: float, motion: Motion) -> FrameSpan:
        """Frames completed by a keyframe at ``timestamp``: those before it, from the previous one."""
        due = self._until(timestamp, inclusive=False)
        self._latest = (timestamp, motion)
        return due

    def finish(self) -> FrameSpan:
        """At end of input: the frames up to and including the last keyframe's time."""
        if self._latest is None:
            return FrameSpan(self.next_index, self.next_index, self.fps, None)
        return self._until(self._latest[0], inclusive=True)

    def _due(self, index: int, timestamp: float, inclusive: bool) -> bool:
        """Frame ``index`` comes before (or, ``inclusive``, at) ``timestamp``."""
        t = index / self.fps
        return t <= timestamp + TOLERANCE_SECONDS and (inclusive or t < timestamp - TOLERANCE_SECONDS)

    def _until(self, timestamp: float, inclusive: bool) -> FrameSpan:
        start = self.next_index
        if self._latest is None:
            # before the first keyframe nothing can be rendered; frames start at its time
            self.next_index = max(start, math.ceil(timestamp * self.fps - TOLERANCE_SECONDS))
            return FrameSpan(start, start, self.fps, None)
        stop = max(start, self._first_not_due(start, timestamp, inclusive))
        self.next_index = stop
        return FrameSpan(start, stop, self.fps, self._latest[1])

    def _first_not_due(self, start: int, timestamp: float, inclusive: bool) -> int:
        """Smallest index >= ``start`` not due: a closed-form guess, corrected by the exact predicate
        (``_due`` is monotone in the index). :meth:`_first_not_due_reference` is the obvious loop."""
        if inclusive:
            guess = math.floor((timestamp + TOLERANCE_SECONDS) * self.fps) + 1
        else:
            guess = math.ceil((timestamp - TOLERANCE_SECONDS) * self.fps)
        stop = max(start, guess)
        while stop > start and not self._due(stop - 1, timestamp, inclusive):
            stop -= 1
        while self._due(stop, timestamp, inclusive):
            stop += 1
        return stop

    def _first_not_due_reference(self, start: int, timestamp: float, inclusive: bool) -> int:
        index = start
        while self._due(index, timestamp, inclusive):
            index += 1
        return index
