"""A loopback TCP proxy in front of the S3 test server that misbehaves like a throttled object store.

Each client connection carries one request (the proxy asks the server to close after its response). A seeded share
of requests is answered `503 SlowDown` without reaching the server, and another share has its connection dropped
before any reply: the S3 clients must retry both. Everything else is piped through byte for byte.
"""

from __future__ import annotations

import random
import socket
import threading

_BODY = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
    + _BODY
)


class FaultyProxy:
    def __init__(self, upstream: str, slow_down: float = 0.15, drop: float = 0.05, seed: int = 0):
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.slow_down, self.drop = slow_down, drop
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "slow_down": 0, "dropped": 0}
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.server.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            with self.lock:
                roll = self.random.random()
                fault = (
                    "slow_down" if roll < self.slow_down else "dropped" if roll < self.slow_down + self.drop else None
                )
                self.counts[fault or "forwarded"] += 1
            if fault == "slow_down":
                client.sendall(SLOW_DOWN)
                return
            if fault == "dropped":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return  # closed with RST, no reply
            header, _, rest = head.partition(b"\r\n\r\n")
            lines = [h for h in header.split(b"\r\n") if not h.lower().startswith(b"connection:")]
            request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + rest
            with socket.create_connection(self.upstream) as server:
                server.sendall(request)
                pump = threading.Thread(target=_pipe, args=(client, server), daemon=True)
                pump.start()
                _pipe(server, client)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
