"""Prometheus metrics, read from the live objects at scrape time.

A custom collector instead of prometheus-client counters incremented on every message:
the server already counts what it does, so the hot paths pay nothing for metrics and a
scrape costs one snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from softswitch.admin.sources import MetricsSnapshot

__all__ = ["CONTENT_TYPE_LATEST", "SoftswitchCollector", "build_registry", "render"]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class SoftswitchCollector(Collector):
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        regs = GaugeMetricFamily(
            "softswitch_registrations",
            "Registered contacts (phones) per tenant",
            labels=["tenant"],
        )
        for tenant, count in sorted(s.registrations.items()):
            regs.add_metric([tenant], count)
        yield regs
        yield _gauge("softswitch_stopping", "1 while the daemon drains before exit", s.stopping)

        if s.active_calls is not None:
            calls = GaugeMetricFamily(
                "softswitch_active_calls", "Calls in progress per tenant", labels=["tenant"]
            )
            for tenant, count in sorted(s.active_calls.items()):
                calls.add_metric([tenant], count)
            yield calls
        if s.calls is not None:
            yield _counter(
                "softswitch_call_attempts", "Calls attempted (INVITEs)", s.calls.attempts
            )
            outcomes = CounterMetricFamily(
                "softswitch_call_outcomes", "Calls ended, by outcome", labels=["outcome"]
            )
            for outcome, count in sorted(s.calls.outcomes.items()):
                outcomes.add_metric([outcome], count)
            yield outcomes

        yield _counter("softswitch_sip_messages_received", "SIP messages received", s.sip_received)
        yield _counter("softswitch_sip_messages_sent", "SIP messages sent", s.sip_sent)
        requests = CounterMetricFamily(
            "softswitch_sip_requests_received", "SIP requests received by method", labels=["method"]
        )
        for method, count in sorted(s.sip_requests.items()):
            requests.add_metric([method], count)
        yield requests
        yield _counter(
            "softswitch_sip_parse_errors",
            "SIP messages that could not be parsed",
            s.sip_parse_errors,
        )
        if s.sip_retransmissions is not None:
            yield _counter(
                "softswitch_sip_retransmissions",
                "SIP messages retransmitted by the transaction layer",
                s.sip_retransmissions,
            )
        yield _gauge("softswitch_sip_transactions", "SIP transactions in progress", s.transactions)

        if s.auth_failures is not None:
            yield _counter(
                "softswitch_auth_failures", "Failed digest authentications", s.auth_failures
            )
        if s.bans is not None:
            yield _counter("softswitch_bans", "Sources banned after failed authentications", s.bans)
        yield _gauge("softswitch_banned_sources", "Source addresses banned now", s.banned_sources)
        yield _counter(
            "softswitch_banned_messages_dropped",
            "Messages ignored because their source is banned",
            s.dropped_banned,
        )

        if s.media is not None:
            m = s.media
            yield _counter(
                "softswitch_rtp_packets_received", "RTP packets received", m.rtp_packets_received
            )
            yield _counter("softswitch_rtp_packets_sent", "RTP packets sent", m.rtp_packets_sent)
            yield _counter(
                "softswitch_rtp_packets_dropped",
                "RTP packets refused (unknown source, bad header, held leg)",
                m.rtp_packets_dropped,
            )
            if m.rtp_packets_lost is not None:
                yield _counter(
                    "softswitch_rtp_packets_lost",
                    "RTP packets lost (sequence gaps)",
                    m.rtp_packets_lost,
                )
            yield _counter(
                "softswitch_engine_late_ticks", "Media engine ticks that started late", m.late_ticks
            )


def build_registry(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry of our own (not the global one), so tests and reloads never see
    metrics registered twice; with the process metrics (memory, CPU, open files)."""
    registry = CollectorRegistry()
    registry.register(SoftswitchCollector(snapshot))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
