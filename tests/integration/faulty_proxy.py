"""A loopback TCP proxy in front of the S3 test server that misbehaves like a throttled object store.

Each client connection carries one request (the proxy asks the server to close after its response). A seeded share
of requests is answered `503 SlowDown` without reaching the server, another share has its connection dropped
before any reply, and another (`lose_reply`) is carried out by the server and then has its reply dropped: the
client sees a dropped connection for a write that did happen; `delay_reply` is carried out and its reply held for
`reply_delay` seconds (`delayed` is set meanwhile: a test signals the client then). `script` gives the faults of
the requests that `only` selects, in order (then the seeded shares apply again). Everything else is piped through
byte for byte.
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
    def __init__(
        self,
        upstream: str,
        slow_down: float = 0.15,
        drop: float = 0.05,
        seed: int = 0,
        lose_reply: float = 0.0,
        only=None,
        script: list[str | None] | None = None,
        reply_delay: float = 3.0,
    ):
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.slow_down, self.drop, self.lose_reply = slow_down, drop, lose_reply
        self.only = only or (lambda head: True)  # which requests may be faulted, from their request head
        self.script = list(script or [])
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "slow_down": 0, "dropped": 0, "lost_reply": 0, "delay_reply": 0}
        self.reply_delay, self.delayed = reply_delay, threading.Event()
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
                fault = None
                if self.only(head):
                    if self.script:
                        fault = self.script.pop(0)
                    else:
                        roll = self.random.random()
                        edges = [("slow_down", self.slow_down), ("dropped", self.drop), ("lost_reply", self.lose_reply)]
                        for name, share in edges:
                            if roll < share:
                                fault = name
                                break
                            roll -= share
                self.counts[fault or "forwarded"] += 1
            if fault == "slow_down":
                client.sendall(SLOW_DOWN)
                return
            if fault == "dropped":
                _reset(client)
                return  # closed with RST, no reply
            header, _, rest = head.partition(b"\r\n\r\n")
            lines = [h for h in header.split(b"\r\n") if not h.lower().startswith(b"connection:")]
            request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + rest
            with socket.create_connection(self.upstream) as server:
                if fault == "lost_reply":  # the whole request reaches the server, its whole reply is dropped
                    server.sendall(request + _body_rest(client, header, rest))
                    server.shutdown(socket.SHUT_WR)
                    while server.recv(65536):
                        pass
                    _reset(client)
                    return
                if fault == "delay_reply":  # carried out by the server; the client waits for its reply
                    server.sendall(request + _body_rest(client, header, rest))
                    server.shutdown(socket.SHUT_WR)
                    reply = b""
                    while chunk := server.recv(65536):
                        reply += chunk
                    self.delayed.set()
                    threading.Event().wait(self.reply_delay)
                    try:
                        client.sendall(reply)
                    except OSError:
                        pass
                    return
                server.sendall(request)
                pump = threading.Thread(target=_pipe, args=(client, server), daemon=True)
                pump.start()
                _pipe(server, client)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _body_rest(client: socket.socket, header: bytes, received: bytes) -> bytes:
    """The rest of the request body after the head (by Content-Length)."""
    length = 0
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    rest = b""
    while len(received) + len(rest) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest


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
