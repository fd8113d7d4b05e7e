"""The admin side of the daemon: JSON API, Prometheus metrics and a live dashboard."""
