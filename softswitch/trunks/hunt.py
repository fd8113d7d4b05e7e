"""Trying a tenant's trunks in order, and counting each trunk's calls. Pure.

A call goes to the tenant's first usable trunk; a 503, any other 5xx, a 408 or no
provisional answer within the trunk's ``setup_timeout`` moves it to the next one. Any
other final answer (486 busy, 404, 603 ...) is the callee's or the network's verdict on
the number and is passed back to the caller: another carrier would only say it again,
and re-trying a rejected number on every trunk is how fraud bills multiply. 401 and 407
are answered on the same trunk (`softswitch.trunks.digest`) before any of this.
"""

from __future__ import annotations

from collections.abc import Callable

from softswitch.trunks.model import Trunk, TrunkSettings

__all__ = ["TrunkHunt", "TrunkUsage", "should_try_next"]


def should_try_next(status: int | None) -> bool:
    """Whether a final answer (None: timed out) from one trunk sends the call on."""
    if status is None:
        return True
    return status == 408 or 500 <= status <= 599


class TrunkUsage:
    """Concurrent calls per trunk, against ``max_concurrent_calls``."""

    def __init__(self) -> None:
        self._active: dict[str, int] = {}

    def try_acquire(self, trunk: Trunk) -> bool:
        count = self._active.get(trunk.name, 0)
        if trunk.max_concurrent_calls is not None and count >= trunk.max_concurrent_calls:
            return False
        self._active[trunk.name] = count + 1
        return True

    def release(self, trunk: Trunk) -> None:
        count = self._active.get(trunk.name, 0) - 1
        if count > 0:
            self._active[trunk.name] = count
        else:
            self._active.pop(trunk.name, None)

    def active(self, trunk_name: str) -> int:
        return self._active.get(trunk_name, 0)


class TrunkHunt:
    """The trunks one outbound call may still try. Each trunk `next` hands out holds a
    slot in `usage` until `release` (or the next `next`) gives it back."""

    def __init__(
        self,
        settings: TrunkSettings,
        tenant: str,
        usage: TrunkUsage,
        *,
        available: Callable[[Trunk], bool] = lambda trunk: True,
    ) -> None:
        """``available``: e.g. "not a registering trunk whose registration failed"."""
        self._queue = settings.trunks_for(tenant)
        self._usage = usage
        self._available = available
        self.current: Trunk | None = None
        self.tried: list[str] = []

    def next(self) -> Trunk | None:
        """The next trunk to try, or None when all are used up (answer the caller 503)."""
        self.release()
        while self._queue:
            trunk = self._queue.pop(0)
            if not self._available(trunk):
                continue
            if self._usage.try_acquire(trunk):
                self.current = trunk
                self.tried.append(trunk.name)
                return trunk
        return None

    def release(self) -> None:
        """Give back the current trunk's slot (call ended, failed, or moving on)."""
        if self.current is not None:
            self._usage.release(self.current)
            self.current = None
