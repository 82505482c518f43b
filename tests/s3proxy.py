"""A failing HTTP proxy on 127.0.0.1 in front of a real S3 endpoint (the moto server): S3 errors on demand.

    proxy = FailingS3Proxy(upstream="http://127.0.0.1:5000", every=5)           # every 5th request: 503/500
    proxy = FailingS3Proxy(upstream, always=[("PUT", r"/predictions/clip/")])   # these writes always fail
    with proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url   # (or a job's env_vars)

Deterministic: a global request counter decides, never a random draw. A failed request is answered with a
real S3 error document (503 SlowDown / 500 InternalError, both retryable for the AWS SDK's standard retry
strategy) after its body has been read, so the client sees a clean error response and retries. Every
other request is forwarded unchanged (method, path, query, headers, body: the SigV4 signature still
matches because the Host header is passed through) and the upstream answer is streamed back.
"""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERRORS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


class FailingS3Proxy:
    def __init__(self, upstream: str, every: int = 0, always: list[tuple[str, str]] | None = None,
                 start_after: int = 0):
        """`every`: fail request number n (1-based, counted after `start_after`) when n % every == 0
        (0: never). `always`: (method, path regex) pairs failed every time (a write that can never succeed)."""
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.every, self.start_after = every, start_after
        self.always = [(m.upper(), re.compile(p)) for m, p in (always or [])]
        self.lock = threading.Lock()
        self.requests = 0
        self.failed: list[tuple[str, str, int]] = []  # (method, path, status)
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

    def decide(self, method: str, path: str) -> tuple[int, str, str] | None:
        """The error to answer with, or None to forward. Counts every request."""
        with self.lock:
            self.requests += 1
            number = self.requests - self.start_after
            error = None
            if any(method == m and rx.search(path) for m, rx in self.always):
                error = ERRORS[0]
            elif self.every and number > 0 and number % self.every == 0:
                error = ERRORS[(number // self.every) % 2]
            if error:
                self.failed.append((method, path, error[0]))
            return error

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

            def _handle(self) -> None:
                body = self._body()
                error = proxy.decide(self.command, self.path)
                if error is not None:
                    status, code, message = error
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                               f"<Message>{message}</Message><RequestId>fer-ray-proxy</RequestId></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():  # HEAD keeps the object's Content-Length
                        if key.lower() not in HOP_BY_HOP and (self.command == "HEAD" or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
