"""A meeting's timeline, serialized once and shared by every stream that plays it.

`SharedTimeline` turns each item into wire pieces once and drops it when every reader has passed it
(memory bounded by how far apart the readers are). With a share window (`TimelineCache(share_s=...)`)
streams of equal meetings that start within it read one timeline (load tests)."""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator

from emulator.wire import CHANNEL_OF, TRANSCRIPT, FrameEncoder, MediaItemLike, Piece

EVENT = -1  # Entry.channel of an event


class Entry:
    """One timeline item with its wire pieces (None for events: they are filtered per stream)."""

    __slots__ = ("offset_ms", "channel", "item", "pieces")

    def __init__(
        self, offset_ms: int, channel: int, item: MediaItemLike, pieces: tuple[Piece, ...] | None
    ) -> None:
        self.offset_ms = offset_ms
        self.channel = channel
        self.item = item
        self.pieces = pieces


class SharedTimeline:
    """A lazily filled window over one timeline; readers hold cursors (entry indices), and what
    every reader has passed is dropped at once (few live objects: cheap garbage collections)."""

    def __init__(
        self,
        items: Iterator[MediaItemLike],
        encoder: FrameEncoder,
        language: int | None,
        hold_until: float = -math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`hold_until`: nothing is dropped before `clock()` reaches it (a reader can still start)."""
        self._items = items
        self._encoder = encoder
        self._language = language
        self._entries: deque[Entry] = deque()
        self._base = 0  # index of self._entries[0]
        self._cursors: dict[int, int] = {}
        self._ids = itertools.count()
        self._done = False
        self._hold_until = hold_until
        self._clock = clock
        self._holding = hold_until > -math.inf

    @property
    def trimmed(self) -> bool:
        """Whether the head is gone (a new reader cannot start here)."""
        return self._base > 0

    def attach(self) -> int:
        cursor = next(self._ids)
        self._cursors[cursor] = self._base
        return cursor

    def detach(self, cursor: int) -> None:
        if self._cursors.pop(cursor, None) is not None and not self._holding:
            self._trim()

    def get(self, index: int) -> Entry | None:
        """Entry `index` (None past the end)."""
        i = index - self._base
        entries = self._entries
        while i >= len(entries):
            if self._done:
                return None
            item = next(self._items, None)
            if item is None:
                self._done = True
                return None
            channel = EVENT if item.kind == "event" else CHANNEL_OF[item.kind]
            pieces = None
            if channel != EVENT:
                pieces = self._encoder.pieces(
                    channel, item, self._language if channel == TRANSCRIPT else None
                )
            entries.append(Entry(item.offset_ms, channel, item, pieces))
        return entries[i]

    def release(self, cursor: int, index: int) -> None:
        """The reader `cursor` will not ask for entries below `index` again."""
        cursors = self._cursors
        old = cursors.get(cursor, self._base)
        cursors[cursor] = index
        if self._holding:
            if self._clock() < self._hold_until:
                return
            self._holding = False
        elif old > self._base:
            return  # the head is held by another reader (the head is always the slowest reader)
        self._trim()

    def _trim(self) -> None:
        cursors = self._cursors
        if not cursors:
            return
        low = min(cursors.values()) if len(cursors) > 1 else next(iter(cursors.values()))
        entries = self._entries
        while self._base < low and entries:
            entries.popleft()
            self._base += 1


class TimelineCache:
    """Shared timelines by key; a timeline lives as long as a stream reads it. `share_s`: a timeline
    keeps its head this long after it opened, so a stream opening the same key within that time reads
    it too (0: only while no reader has moved past its head)."""

    def __init__(self, share_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._timelines: weakref.WeakValueDictionary[Hashable, SharedTimeline] = weakref.WeakValueDictionary()
        self._share_s = share_s
        self._clock = clock

    def open(
        self,
        key: Hashable,
        make_items: Callable[[], Iterator[MediaItemLike]],
        encoder: FrameEncoder,
        language: int | None,
    ) -> SharedTimeline:
        """The live timeline for `key` if a reader can still start at its beginning, else a new one."""
        timeline = self._timelines.get(key)
        if timeline is None or timeline.trimmed:
            hold = self._clock() + self._share_s if self._share_s > 0 else -math.inf
            timeline = SharedTimeline(make_items(), encoder, language, hold, self._clock)
            self._timelines[key] = timeline
        return timeline
