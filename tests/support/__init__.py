"""Helpers that drive real peers (the daemon, SIPp, baresip) from tests and the bench.

Modules that the bench also imports (ports, sipmsg, daemon, sipp, audio) must not
import pytest; only ``tools`` does.
"""
