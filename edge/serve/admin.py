"""The daemon's HTTP endpoint on [metrics] host:port: Prometheus metrics, health and reload.

    GET  /metrics    the Prometheus exposition (prometheus-client's WSGI app)
    GET  /healthz    200 while every thread of the daemon is alive, else 503
    GET  /readyz     200 once the model is loaded and warmed, every stage is progressing and
                     the input is connected (a bound input: listening), else 503; JSON reasons
    POST /-/reload   load the configured bundle beside the serving one and swap (loopback only)

A standard WSGI server (wsgiref, one thread per request) serves it; the health answers are
computed by the daemon (`Health`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from edge.errors import UserError
from edge.serve.metrics import EdgeMetrics

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: dict[str, Any]


class Health(Protocol):
    def liveness(self) -> Verdict: ...
    def readiness(self) -> Verdict: ...
    def reload(self) -> Verdict: ...


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class AdminApp:
    """The WSGI application: routes to the metrics app and the daemon's health answers."""

    def __init__(self, metrics: EdgeMetrics, health: Health) -> None:
        self._metrics = make_wsgi_app(metrics.registry)
        self._health = health

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return self._metrics(environ, start)  # type: ignore[no-any-return]
        if path == "/healthz" and method == "GET":
            return _answer(start, self._health.liveness())
        if path == "/readyz" and method == "GET":
            return _answer(start, self._health.readiness())
        if path == "/-/reload" and method == "POST":
            if not ip_address(environ.get("REMOTE_ADDR", "0.0.0.0")).is_loopback:
                return _answer(start, Verdict(False, {"error": "reload only from loopback"}), 403)
            return _answer(start, self._health.reload(), 500)
        return _answer(start, Verdict(False, {"error": f"no {method} {path}"}), 404)


def _answer(start: StartResponse, verdict: Verdict, failure: int = 503) -> list[bytes]:
    body = json.dumps({"ok": verdict.ok, **verdict.detail}).encode()
    status = "200 OK" if verdict.ok else {403: "403 Forbidden", 404: "404 Not Found",
                                          500: "500 Internal Server Error",
                                          503: "503 Service Unavailable"}[failure]
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class AdminServer:
    """The endpoint in a thread of its own; port 0 picks a free port."""

    def __init__(self, metrics: EdgeMetrics, health: Health, host: str, port: int) -> None:
        try:
            self._server = make_server(host, port, AdminApp(metrics, health),
                                       server_class=_ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise UserError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="edge-http",
                                        daemon=True)
        self._thread.start()
        log.info("metrics, /healthz and /readyz on http://%s:%d", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
