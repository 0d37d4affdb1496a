"""Sockets for the servers the tests run inside their own event loop."""

from __future__ import annotations

import socket


def tcp_listener(port: int = 0) -> socket.socket:
    """A socket for an in-process uvicorn, bound on 127.0.0.1.

    Made with IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off only on sockets
    whose protocol says TCP, and accepted sockets inherit it. With proto 0, each response's
    body waited for the client's delayed ACK of its headers: 40 ms a request."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock
