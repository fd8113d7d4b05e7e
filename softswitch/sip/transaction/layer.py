"""The transaction layer: the table of live transactions, message matching (RFC 3261
17.1.3, 17.2.3) and one timer queue for all of them.

The driver feeds it messages, TU requests and timer ticks, each with ``now``, sends the
SendMessage outputs and hands the rest to the TU; it arms a single OS timer at
``next_deadline()`` (aioquic's get_timer/handle_timer).

Deadlines sit in one heap. A transaction that changes its deadline gets a new entry and
a new generation; entries of older generations are skipped when they surface and purged
in bulk when they outnumber the live ones, so every operation stays O(log n).
"""

from __future__ import annotations

import heapq
import itertools

from softswitch.sip.message import Message, Request, Response
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction.client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from softswitch.sip.transaction.events import (
    Destination,
    Event,
    State,
    StrayAck,
    StrayResponse,
    TransactionError,
)
from softswitch.sip.transaction.keys import (
    ClientKey,
    LegacyServerKey,
    ServerKey,
    TransactionKey,
    client_key,
    invite_key_for_cancel,
    response_key,
    server_key,
)
from softswitch.sip.transaction.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)

Transaction = ClientTransaction | ServerTransaction

# Heap entries: (deadline, tie-breaker, generation, transaction). The tie-breaker keeps
# tuples from ever comparing transactions.
_Entry = tuple[float, int, int, Transaction]

# Stale entries may outnumber live ones by this factor (plus a floor) before a purge.
_STALE_FACTOR = 2
_STALE_FLOOR = 1024


class TransactionLayer:
    def __init__(
        self, config: TimerConfig | None = None, *, trying_after: float | None = 0.2
    ) -> None:
        """``trying_after``: delay before an INVITE server transaction answers 100
        Trying on its own when the TU has not responded (0: at once, None: never)."""
        self.config = config if config is not None else TimerConfig()
        self.trying_after = trying_after
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey | LegacyServerKey, ServerTransaction] = {}
        self._heap: list[_Entry] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- lookups --

    def get(self, key: TransactionKey) -> Transaction | None:
        if isinstance(key, ClientKey):
            return self._clients.get(key)
        return self._servers.get(key)

    def find_server_transaction_for_cancel(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (RFC 3261 9.2), if alive."""
        tx = self._servers.get(invite_key_for_cancel(cancel))
        return tx if isinstance(tx, InviteServerTransaction) else None

    # -- inputs --

    def receive(self, message: Message, source: Destination, now: float) -> list[Event]:
        """A message from the transport."""
        if isinstance(message, Response):
            return self._receive_response(message, source, now)
        return self._receive_request(message, source, now)

    def send_request(
        self, request: Request, destination: Destination, now: float
    ) -> tuple[ClientKey, list[Event]]:
        """Start a client transaction. The request's top Via must carry a branch from
        ``new_branch()``. An ACK for a 2xx is no transaction: send it directly."""
        if request.method == "ACK":
            raise TransactionError("an ACK is sent outside any client transaction")
        key = client_key(request)
        if key in self._clients:
            raise TransactionError(f"a client transaction already uses {key}")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(key, request, destination, self.config, destination.reliable)
        self._clients[key] = tx
        out = tx.start(now)
        self._schedule(tx)
        return key, out

    def send_response(
        self,
        key: ServerKey | LegacyServerKey,
        response: Response,
        now: float,
        destination: Destination | None = None,
    ) -> list[Event]:
        """Send the TU's response on a server transaction. Raises TransactionError when
        the transaction is gone or cannot send it in its state."""
        tx = self._servers.get(key)
        if tx is None:
            raise TransactionError(f"no server transaction {key}")
        out = tx.send_response(response, now, destination)
        self._after(tx)
        return out

    def transport_error(self, key: TransactionKey, now: float) -> list[Event]:
        """The transport failed to deliver a message of this transaction."""
        tx = self.get(key)
        if tx is None:
            return []
        out = tx.transport_error(now)
        self._after(tx)
        return out

    def terminate(self, key: TransactionKey) -> list[Event]:
        """Destroy a transaction at the TU's request (RFC 3261 9.1: an INVITE still
        unanswered 64*T1 after its CANCEL)."""
        tx = self.get(key)
        if tx is None:
            return []
        out = tx.terminate()
        self._after(tx)
        return out

    # -- time --

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[2] == entry[3].timer_generation:
                return entry[0]
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``; terminated transactions leave the table."""
        out: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, _seq, generation, tx = heapq.heappop(heap)
            if generation != tx.timer_generation:
                continue
            # The entry is consumed: a reschedule must push afresh even if it lands on
            # the same deadline.
            tx.scheduled_at = None
            out.extend(tx.handle_timer(now))
            self._after(tx)
        return out

    # -- internals --

    def _receive_request(self, request: Request, source: Destination, now: float) -> list[Event]:
        key = server_key(request)
        tx = self._servers.get(key)
        if request.method == "ACK":
            if tx is None and isinstance(key, LegacyServerKey):
                tx = self._match_legacy_ack(key, request)
            if tx is None:
                return [StrayAck(request, source)]
        elif tx is None:
            if request.method == "INVITE":
                tx = InviteServerTransaction(
                    key, request, source, self.config, source.reliable, self.trying_after
                )
            else:
                tx = NonInviteServerTransaction(key, request, source, self.config, source.reliable)
            self._servers[key] = tx
            out = tx.start(now)
            self._schedule(tx)
            return out
        out = tx.receive_request(request, now)
        self._after(tx)
        return out

    def _match_legacy_ack(self, key: LegacyServerKey, ack: Request) -> ServerTransaction | None:
        # The ACK's To tag is the one our response added, which an initial INVITE lacked
        # (RFC 3261 17.2.3); it must equal the tag of the response we sent.
        if key.to_tag is None:
            return None
        tx = self._servers.get(key._replace(to_tag=None))
        if tx is None or tx.last_response is None:
            return None
        return tx if tx.last_response.to.tag == key.to_tag else None

    def _receive_response(self, response: Response, source: Destination, now: float) -> list[Event]:
        key = response_key(response)
        tx = self._clients.get(key) if key is not None else None
        if tx is None:
            return [StrayResponse(response, source)]
        out = tx.receive_response(response, now)
        self._after(tx)
        return out

    def _after(self, tx: Transaction) -> None:
        if tx.state is State.TERMINATED:
            tx.timer_generation += 1
            tx.scheduled_at = None
            if isinstance(tx, ClientTransaction):
                if self._clients.get(tx.key) is tx:
                    del self._clients[tx.key]
            elif self._servers.get(tx.key) is tx:
                del self._servers[tx.key]
            return
        self._schedule(tx)

    def _schedule(self, tx: Transaction) -> None:
        deadline = tx.next_deadline()
        if deadline == tx.scheduled_at:
            return
        tx.timer_generation += 1
        tx.scheduled_at = deadline
        if deadline is None:
            return
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._counter), tx.timer_generation, tx))
        if len(heap) > _STALE_FACTOR * len(self) + _STALE_FLOOR:
            self._purge()

    def _purge(self) -> None:
        # In place: handle_timers may be iterating over the same list object.
        self._heap[:] = [e for e in self._heap if e[2] == e[3].timer_generation]
        heapq.heapify(self._heap)
