"""One heap of deadlines for every call timer (ring timeout, 2xx retransmission, session
refresh, ...), with lazy deletion.

An owner (a call or a leg) keeps ``timers: dict[kind, token]``; an entry in the heap is
live only while its token is still the owner's token for that kind. Rescheduling or
cancelling therefore costs a dict write, never a heap search (Kamailio's rule that a
timer may fire after it was reset, handled with a generation per entry).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol

_STALE_FACTOR = 3
_STALE_FLOOR = 1024


class Timed(Protocol):
    timers: dict[str, int]

    def on_timer(self, kind: str, now: float) -> None: ...


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed, str]] = []
        self._tokens = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def schedule(self, owner: Timed, kind: str, at: float) -> None:
        """Fire ``owner.on_timer(kind, now)`` at ``at``; replaces a pending one of that kind."""
        token = next(self._tokens)
        if kind not in owner.timers:
            self._live += 1
        owner.timers[kind] = token
        heapq.heappush(self._heap, (at, token, owner, kind))
        if len(self._heap) > _STALE_FACTOR * self._live + _STALE_FLOOR:
            self._purge()

    def cancel(self, owner: Timed, kind: str) -> None:
        if owner.timers.pop(kind, None) is not None:
            self._live -= 1

    def cancel_all(self, owner: Timed) -> None:
        self._live -= len(owner.timers)
        owner.timers.clear()

    def pending(self, owner: Timed, kind: str) -> bool:
        return kind in owner.timers

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            at, token, owner, kind = heap[0]
            if owner.timers.get(kind) == token:
                return at
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[tuple[Timed, str]]:
        """The timers due at ``now``, in deadline order; they are no longer pending."""
        due: list[tuple[Timed, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _at, token, owner, kind = heapq.heappop(heap)
            if owner.timers.get(kind) == token:
                del owner.timers[kind]
                self._live -= 1
                due.append((owner, kind))
        return due

    def _purge(self) -> None:
        self._heap[:] = [e for e in self._heap if e[2].timers.get(e[3]) == e[1]]
        heapq.heapify(self._heap)
