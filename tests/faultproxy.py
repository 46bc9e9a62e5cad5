"""A threaded HTTP proxy on 127.0.0.1 that sits in front of a registry and misbehaves on cue.

Rules match a method and a path regex and apply to the next ``times`` matching requests
(forever when None). Actions:

* ``status``: answer ``status`` (with ``headers``, e.g. Retry-After) without asking upstream;
* ``reset``: close the connection without answering;
* ``drop``: forward, send the headers and ``after`` body bytes, then close the connection;
* ``flip``: forward, but invert the body byte at offset ``after``;
* ``ignore_range``: drop the Range header (upstream answers 200 with the whole blob);
* ``refuse_multirange``: drop the Range header only when it names several ranges;
* ``first_range_only``: forward only the first of several ranges (a single-part 206);
* ``truncate``: forward, then cut a 206 body to ``after`` bytes (a short read);
* ``redirect``: answer 307 to the same path and query on ``target`` (another listener);
* ``delay``: forward after ``seconds`` (a slow registry: requests stay in flight a while).

``chaos(rate, seed)`` adds, on top of the rules, one fault drawn at random to a share ``rate``
of all requests (a 503, a 429 with Retry-After, a reset, a body cut short, a short 206, a
flipped byte, a 200 for a range request, a slow answer, a redirect to the registry itself);
``injected`` counts them by kind.

Every request is recorded (method, path, headers) so tests can check what was sent where.
``upstream_headers`` are added to forwarded requests (a storage stand-in that signs its own
requests). ``stop()`` also cuts open connections, so it looks like the server went away.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultProxy", "Rule", "Seen"]

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "content-length"}


@dataclass
class Rule:
    action: str
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0
    target: str = ""
    seconds: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class FaultProxy:
    """Forwards to ``upstream`` (``host:port``) on its own 127.0.0.1 port, breaking on cue."""

    def __init__(self, upstream: str, *, port: int = 0,
                 upstream_headers: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.upstream_headers = dict(upstream_headers or {})
        self.rules: list[Rule] = []
        self.requests: list[Seen] = []
        self.connections = 0
        """Connections accepted so far: whether a client reuses its connections."""
        self._lock = threading.Lock()
        self._chaos: tuple[float, random.Random] | None = None
        self.injected: collections.Counter[str] = collections.Counter()
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._sockets: set[socket.socket] = set()
        self.start()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        """Listen (again, on the same port after a ``stop()``)."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    close = stop

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------------------

    def add(self, action: str, *, method: str | None = None, path: str | None = None,
            times: int | None = 1, **kw: Any) -> Rule:
        rule = Rule(action, method, path, times, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def chaos(self, rate: float, seed: int = 0) -> None:
        """From now on, a random fault on a share ``rate`` of requests (0 stops it)."""
        with self._lock:
            self._chaos = (rate, random.Random(seed)) if rate else None

    def _chaos_rule(self, method: str) -> Rule | None:
        if self._chaos is None:
            return None
        rate, rng = self._chaos
        if rng.random() >= rate:
            return None
        kinds = ["503", "429", "reset", "drop", "truncate", "flip", "ignore_range", "delay",
                 "redirect"]
        if method not in ("GET", "HEAD"):
            kinds = ["503", "429", "reset"]  # (an upload that got through is not undone)
        kind = rng.choice(kinds)
        self.injected[kind] += 1
        if kind in ("503", "429"):
            return Rule("status", status=int(kind),
                        headers={"Retry-After": "1"} if kind == "429" else {})
        if kind == "redirect":
            return Rule("redirect", target=f"http://{self.upstream}")
        return Rule(kind, after=rng.randrange(1, 4096), seconds=rng.uniform(0.1, 0.4))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests
                    if (method is None or s.method == method)
                    and (path is None or re.search(path, s.path))]

    def _match(self, method: str, path: str, headers: dict[str, str]) -> list[Rule]:
        with self._lock:
            self.requests.append(Seen(method, path, headers))
            hits = [r for r in self.rules if r.matches(method, path)]
            for rule in hits:
                rule.hits += 1
            extra = self._chaos_rule(method)
            return hits if extra is None else [*hits, extra]

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)
            self.connections += add


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.proxy._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.proxy._track(self.connection, False)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes,
              length: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items()}
        rules = self.proxy._match(self.command, self.path, headers)
        actions = {r.action: r for r in rules}
        if "reset" in actions:
            return self._cut()
        if "status" in actions:
            rule = actions["status"]
            doc = {"errors": [{"code": "UNAVAILABLE" if rule.status >= 500 else "TOOMANYREQUESTS",
                               "message": f"injected {rule.status}"}]}
            extra = [("Content-Type", "application/json"), *rule.headers.items()]
            return self._send(rule.status, extra, json.dumps(doc).encode())
        if "redirect" in actions:
            target = actions["redirect"].target.rstrip("/") + self.path
            return self._send(307, [("Location", target)], b"")
        if "delay" in actions:
            time.sleep(actions["delay"].seconds)
        forward = {k: v for k, v in headers.items() if k.lower() not in _HOP}
        forward.update(self.proxy.upstream_headers)
        rng = forward.get("Range")
        if rng is not None:
            if "ignore_range" in actions or ("refuse_multirange" in actions and "," in rng):
                forward.pop("Range")
            elif "first_range_only" in actions and "," in rng:
                forward["Range"] = rng.split(",")[0]
        host, _, port = self.proxy.upstream.partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(self.command, self.path, body=body or None, headers=forward)
            upstream = conn.getresponse()
            try:
                data = bytearray(upstream.read())
            except http.client.IncompleteRead as exc:
                # docker-registry 2.8 answers 416 with the blob's Content-Length and a short
                # text body; pass on what arrived
                data = bytearray(exc.partial)
        except OSError as exc:
            return self._send(502, [("Content-Type", "text/plain")], f"upstream: {exc}".encode())
        finally:
            conn.close()
        out = [(k, v) for k, v in upstream.getheaders() if k.lower() not in _HOP]
        length = None
        if self.command == "HEAD":
            length = int(upstream.getheader("Content-Length") or 0)
        if "flip" in actions and len(data) > actions["flip"].after:
            data[actions["flip"].after] ^= 0xFF
        if "truncate" in actions and upstream.status == 206:
            data = data[: actions["truncate"].after]
        if "drop" in actions and self.command != "HEAD":
            self.send_response(upstream.status)
            for name, value in out:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(bytes(data[: actions["drop"].after]))
            return self._cut()
        self._send(upstream.status, out, bytes(data), length)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
