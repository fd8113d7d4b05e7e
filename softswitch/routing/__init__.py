"""Routing decisions: pure functions from a tenant and a dialled string to a target."""
