"""Loopback networking helpers shared by the local stacks (Airflow, Spark standalone) and their tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; another process can
    still take it before the caller binds, which the callers' start-up checks report)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
