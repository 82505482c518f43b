"""A failing HTTP proxy on 127.0.0.1 in front of a real S3 endpoint (the moto server): S3 faults on demand.

    proxy = FailingS3Proxy(upstream="http://127.0.0.1:5000", every=5)           # every 5th request: 503/500
    proxy = FailingS3Proxy(upstream, always=[("PUT", r"/predictions/clip/")])   # these writes always fail
    proxy = FailingS3Proxy(upstream, faults=[Fault("reset", "GET", r"/videos/", times=2)])
    with proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url   # (or a job's env_vars)

Fault kinds (a `Fault` hits the first `times` requests matching its method and path regex; times=None: all):
  error  a real S3 error document (503 SlowDown), after the request body was read: a clean error answer
  reset  the upstream answer's headers (full Content-Length) and half its body, then a TCP reset
  slow   wait `delay` seconds before answering (longer than the client's timeout: it gives up first)
  cut    an upload interrupted halfway: the proxy reads half the request body, then resets the connection.
         With upstream_half=True it first passes that half upstream under the full Content-Length (note:
         moto then stores the truncated body as an object, where real S3 refuses a short body; so the
         default keeps the half to itself and the check is what the client does about the cut)

Deterministic: counters decide, never a random draw. `every` fails request number n (after `start_after`)
when n % every == 0, alternating 503 SlowDown / 500 InternalError, both retryable for the AWS SDK's standard
retry strategy. Every other request is forwarded unchanged (method, path, query, headers, body: the SigV4
signature still matches because the Host header is passed through) and the upstream answer sent back.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERRORS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


KINDS = ("error", "reset", "slow", "cut")


@dataclass
class Fault:
    kind: str  # one of KINDS
    method: str
    path: str  # regex searched in the request path (with query)
    times: int | None = 1  # the first n matching requests; None: every one
    delay: float = 0.0  # "slow": seconds before answering
    upstream_half: bool = False  # "cut": pass the half body upstream before dropping both sides
    hits: int = 0

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        self.method, self.regex = self.method.upper(), re.compile(self.path)


class FailingS3Proxy:
    def __init__(self, upstream: str, every: int = 0, always: list[tuple[str, str]] | None = None,
                 start_after: int = 0, faults: list[Fault] | None = None):
        """`every`: fail request number n (1-based, counted after `start_after`) when n % every == 0
        (0: never). `always`: (method, path regex) pairs failed every time (a write that can never succeed).
        `faults`: the faults above, checked in order before `every`."""
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.every, self.start_after = every, start_after
        self.faults = [Fault("error", m, p, times=None) for m, p in (always or [])] + list(faults or [])
        self.lock = threading.Lock()
        self.requests = 0
        self.failed: list[tuple[str, str, int | str]] = []  # (method, path, status or fault kind)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FailingS3Proxy:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FailingS3Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def decide(self, method: str, path: str) -> tuple[str, Fault | tuple[int, str, str]] | None:
        """("error", (status, code, message)) or (kind, Fault) to inject, or None to forward. Counts requests."""
        with self.lock:
            self.requests += 1
            number = self.requests - self.start_after
            for fault in self.faults:
                if fault.method == method and fault.regex.search(path) and \
                        (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    self.failed.append((method, path, ERRORS[0][0] if fault.kind == "error" else fault.kind))
                    return ("error", ERRORS[0]) if fault.kind == "error" else (fault.kind, fault)
            if self.every and number > 0 and number % self.every == 0:
                error = ERRORS[(number // self.every) % 2]
                self.failed.append((method, path, error[0]))
                return "error", error
            return None

    def kinds(self) -> set:
        """The faults injected so far: HTTP statuses and fault kinds."""
        with self.lock:
            return {status for _, _, status in self.failed}

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(data)
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reset(self) -> None:
                """Drop the client connection with a TCP reset (SO_LINGER 0), mid-whatever it was doing."""
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _error(self, status: int, code: str, message: str) -> None:
                payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                           f"<Message>{message}</Message><RequestId>fer-ray-proxy</RequestId></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _cut_upload(self, headers: dict, fault: Fault) -> None:
                """Half the body read (and maybe passed upstream under the full Content-Length), then a reset."""
                length = int(self.headers.get("Content-Length") or 0)
                half = self.rfile.read(length // 2) if length else b""
                if fault.upstream_half:
                    upstream = socket.create_connection(proxy.upstream, timeout=10)
                    try:
                        lines = [f"{self.command} {self.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
                        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + half)
                        time.sleep(0.2)  # let the server start on the body before it stops short
                    finally:
                        upstream.close()
                self._reset()

            def _forward(self, body: bytes, headers: dict) -> tuple[int, str, list, bytes]:
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    return response.status, response.reason, response.getheaders(), response.read()
                finally:
                    connection.close()

            def _handle(self) -> None:
                decision = proxy.decide(self.command, self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if decision is not None and decision[0] == "cut":
                    return self._cut_upload(headers, decision[1])
                body = self._body()
                if decision is not None and decision[0] == "error":
                    return self._error(*decision[1])
                if decision is not None and decision[0] == "slow":
                    time.sleep(decision[1].delay)  # the client has timed out and hung up by now
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                status, reason, upstream_headers, data = self._forward(body, headers)
                try:
                    self.send_response(status, reason)
                    for key, value in upstream_headers:  # HEAD keeps the object's Content-Length
                        if key.lower() not in HOP_BY_HOP and (self.command == "HEAD" or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if decision is not None and decision[0] == "reset" and len(data) > 1:
                        self.wfile.write(data[: len(data) // 2])  # the promised length, half delivered
                        return self._reset()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # a client that gave up (slow): nothing to do
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
