"""Reorder and de-duplicate one lane of frames within a window of media time.

`ReorderBuffer` (pure) orders by (timestamp, digest), releases once media time (or a progress mark)
passes an item by `window_ms`, drops duplicates within `dedupe_horizon_ms` and reports items below the last
released key as late. `resume(last_emitted_key)` restores it after a crash (property-tested)."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

__all__ = ["Fate", "Key", "Keyed", "Outcome", "ReorderBuffer", "key_of"]

DEFAULT_WINDOW_MS = 300
# Long enough to recognise the re-sends of a short reconnect as duplicates; longer outages are
# reported as late instead (still never emitted twice).
DEFAULT_DEDUPE_HORIZON_MS = 5_000

Key = tuple[int, bytes]
"""An item's order key: (timestamp_ms, digest)."""


class Keyed(Protocol):
    """What the buffer needs from an item: its RTMS timestamp and a content digest.

    The caller computes the digest over the frame's identity and payload: two items with the same
    digest are the same frame; same timestamp with different digests are two frames, both kept.
    """

    @property
    def timestamp_ms(self) -> int: ...

    @property
    def digest(self) -> bytes: ...


T = TypeVar("T", bound=Keyed)


def key_of(item: Keyed) -> Key:
    """The order key of an item."""
    return (item.timestamp_ms, item.digest)


class Fate(StrEnum):
    """What became of a pushed item. Every item gets exactly one fate."""

    ACCEPTED = "accepted"  # held; it is (or later will be) released in order
    LATE = "late"  # below the last released key: never emitted; send it to rtms.late
    DUPLICATE = "duplicate"  # same digest as one held or recently released: dropped, counted
    SKIPPED = "skipped"  # at or below the resume key: emitted before a restart


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The result of one `push`: the pushed item's fate and what was released, in order.

    `released` may include the pushed item itself (when it is already outside the window).
    `lateness_ms` is set for LATE items: how far behind the last released timestamp it came (0 when
    it came after the end of stream at or past that timestamp).
    """

    fate: Fate
    released: list[T] = field(default_factory=list)
    lateness_ms: int = 0


class ReorderBuffer(Generic[T]):
    """Reorders and de-duplicates one lane.

    Order: key `(timestamp_ms, digest)`; ties broken by the digest, never by arrival, so any arrival
    order of the same set gives the same strictly increasing output. Window: an item is released once
    `max_timestamp_seen - window_ms >= item.timestamp_ms` (media time); `advance` (a progress mark)
    raises the maximum without an item. An item below the last released key is *late* (never emitted).
    Duplicates: a digest held, or released within the last `dedupe_horizon_ms`, is counted, never
    emitted; an older repeat is reported late (the horizon only decides the label and bounds memory).

    Restart: `resume(last_emitted_key)` skips items at or below that key. Every input before the
    commit point is in the acknowledged output, late or a duplicate of it, so at or below the key; an
    item above it is released only by inputs at or after the commit point, which both runs see in the
    same order. tests/processors/test_reorder.py checks this for any crash point.

    Memory: the items inside the window, plus the digests released in the last
    `dedupe_horizon_ms` of media time.
    """

    def __init__(
        self, window_ms: int = DEFAULT_WINDOW_MS, dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS
    ) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if dedupe_horizon_ms < 0:
            raise ValueError(f"dedupe_horizon_ms must be >= 0, got {dedupe_horizon_ms}")
        self.window_ms = window_ms
        self.dedupe_horizon_ms = dedupe_horizon_ms
        # (timestamp, digest, item): tuples compare in C, and a held digest is unique, so two
        # entries never tie on (timestamp, digest) and the item is never compared
        self._heap: list[tuple[int, bytes, T]] = []
        self._held_digests: set[bytes] = set()
        # Released digests in release (= key) order, for duplicate detection within the horizon.
        self._recent: deque[tuple[int, bytes]] = deque()
        self._recent_digests: set[bytes] = set()
        self._max_ts: int | None = None
        self._last_key: Key | None = None
        self._resume_key: Key | None = None
        self._ended = False
        self.late_count = 0
        self.duplicate_count = 0
        self.skipped_count = 0
        self.released_count = 0

    @classmethod
    def resume(
        cls,
        last_emitted_key: Key | None,
        window_ms: int = DEFAULT_WINDOW_MS,
        dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS,
    ) -> ReorderBuffer[T]:
        """A buffer for a lane whose output already ends at `last_emitted_key` (None: nothing
        emitted yet, which is a fresh buffer). Re-fed inputs at or below that key are SKIPPED."""
        buf: ReorderBuffer[T] = cls(window_ms, dedupe_horizon_ms)
        if last_emitted_key is not None:
            ts, digest = last_emitted_key
            buf._resume_key = (ts, digest)
            buf._last_key = (ts, digest)
            buf._max_ts = ts
            buf._remember(ts, digest)
        return buf

    # -- observation -------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """How many items are held (the reorder depth metric)."""
        return len(self._heap)

    @property
    def remembered(self) -> int:
        """How many released digests are kept for duplicate detection (bounded by the horizon)."""
        return len(self._recent)

    @property
    def last_key(self) -> Key | None:
        """The key of the last released item (or the resume key), None before any."""
        return self._last_key

    @property
    def max_timestamp_ms(self) -> int | None:
        """The highest timestamp accepted so far (or the resume key's)."""
        return self._max_ts

    @property
    def ended(self) -> bool:
        """True after `flush()`: every later push is late (or a duplicate)."""
        return self._ended

    # -- feeding -----------------------------------------------------------------------------

    def push(self, item: T) -> Outcome[T]:
        """Take one item; return its fate and the items now released, in key order."""
        key = key_of(item)
        ts, digest = key
        if self._resume_key is not None and key <= self._resume_key:
            self.skipped_count += 1
            return Outcome(Fate.SKIPPED)
        if digest in self._held_digests or digest in self._recent_digests:
            self.duplicate_count += 1
            return Outcome(Fate.DUPLICATE)
        last = self._last_key
        if self._ended or (last is not None and key < last):
            self.late_count += 1
            lateness = 0 if last is None else max(0, last[0] - ts)
            return Outcome(Fate.LATE, lateness_ms=lateness)
        heapq.heappush(self._heap, (ts, digest, item))
        self._held_digests.add(digest)
        if self._max_ts is None or ts > self._max_ts:
            self._max_ts = ts
        return Outcome(Fate.ACCEPTED, self._release(self._max_ts - self.window_ms))

    def remember_released(self, key: Key) -> None:
        """After `resume`: an item released before the restart, to recognise its repeats (a lane
        whose keys are arrival positions, where a repeat's key is its own, not its original's)."""
        self._remember(*key)

    def advance(self, media_ms: int) -> list[T]:
        """A progress mark: the lane's media clock has reached `media_ms` (as if an item stamped
        then had been pushed, without one): release what is now outside the window, in order."""
        if self._ended:
            return []
        if self._max_ts is None or media_ms > self._max_ts:
            self._max_ts = media_ms
        return self._release(self._max_ts - self.window_ms)

    def flush(self) -> list[T]:
        """End of stream: release everything held, in order. Later pushes are late."""
        self._ended = True
        return self._release(None)

    # -- internals ---------------------------------------------------------------------------

    def _release(self, up_to_ts: int | None) -> list[T]:
        heap = self._heap
        released: list[T] = []
        if not heap or (up_to_ts is not None and heap[0][0] > up_to_ts):
            return released  # the common case in steady state costs one comparison
        held_digests, recent, recent_digests = self._held_digests, self._recent, self._recent_digests
        while heap and (up_to_ts is None or heap[0][0] <= up_to_ts):
            ts, digest, item = heapq.heappop(heap)
            held_digests.discard(digest)
            recent.append((ts, digest))
            recent_digests.add(digest)
            released.append(item)
        self._last_key = (ts, digest)
        self.released_count += len(released)
        self._forget()
        return released

    def _remember(self, ts: int, digest: bytes) -> None:
        self._recent.append((ts, digest))
        self._recent_digests.add(digest)

    def _forget(self) -> None:
        if self._last_key is None:
            return
        last_ts, _ = self._last_key
        horizon = last_ts - self.dedupe_horizon_ms
        recent = self._recent
        # Keep the last released digest whatever its age: a repeat of it must read as a duplicate.
        while len(recent) > 1 and recent[0][0] < horizon:
            _, digest = recent.popleft()
            self._recent_digests.discard(digest)
