"""The pool of RTP ports: even ports of a configured range, RTCP on the odd port above.

Freed ports go to the back of the queue, so a port is reused as late as possible: late
packets of a finished call then land on a closed port, not in somebody else's call.
Whether a port is really free is only known by binding it (another program may hold
it), so :meth:`PortPool.allocate` takes the bind step as a function and moves on to the
next port when it fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PortsExhausted(RuntimeError):
    """No port of the range could be bound."""


class PortPool:
    def __init__(self, low: int, high: int) -> None:
        """Ports ``low`` .. ``high`` inclusive; RTP gets the even ones whose RTCP fits."""
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad RTP port range {low}-{high}")
        first = low + (low & 1)
        self.low, self.high = low, high
        self._free: deque[int] = deque(range(first, high, 2))
        if not self._free:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> frozenset[int]:
        return frozenset(self._in_use)

    def allocate(self, bind: Callable[[int], T]) -> tuple[int, T]:
        """The next port that ``bind(port)`` accepts, and what it returned.

        ``bind`` raises OSError for a port it cannot take; that port goes to the back of
        the queue and the next one is tried, each free port at most once.
        """
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                bound = bind(port)
            except OSError:
                self._free.append(port)
                continue
            self._in_use.add(port)
            return port, bound
        raise PortsExhausted(f"no free RTP port in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        """Give a port back. Releasing a port that is not in use is ignored."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)
