"""How the reward server runs under uvicorn: a request-head timeout in the HTTP protocol, and
credentials redacted from the access log.

uvicorn has no timeout for an incomplete request head, and its keep-alive timer is cancelled by
every byte received: a client that opens a few hundred sockets and sends a partial request line
on each holds them open forever, and once `limit_concurrency` connections are open every other
request gets 503. `HeadTimeoutProtocol` closes a connection whose request head (request line
and headers) is not complete `head_timeout_s` after the connection opened or after the previous
response on it, however many bytes trickle in. Exposed deployments still belong behind a
reverse proxy that buffers requests (docs/serving.md).
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_HEAD_TIMEOUT_S = 10.0
# Query parameters whose values are credentials: never written to a log.
SECRET_PARAMS = ("token", "access_token", "api_key", "apikey", "api-key", "key", "secret", "password",
                 "passwd", "auth", "authorization", "bearer", "session", "sig", "signature")
_SECRET_RE = re.compile(r"([?&;](?:%s)=)[^&;\s\"]*" % "|".join(re.escape(p) for p in SECRET_PARAMS),
                        re.IGNORECASE)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head is late."""

    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S   # set per server by `protocol_class`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()   # the next request on this keep-alive connection

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()  # type: ignore[union-attr]
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being handled (or a pipelined one waits): its head arrived
        if not self.transport.is_closing():
            log.debug("closing a connection whose request head took over %.1f s", self.head_timeout_s)
            self.transport.close()


def protocol_class(head_timeout_s: float) -> type[HeadTimeoutProtocol]:
    """A HeadTimeoutProtocol subclass with this timeout (uvicorn instantiates the class)."""
    if not head_timeout_s > 0:
        raise ValueError(f"head timeout must be > 0 seconds, got {head_timeout_s}")
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": float(head_timeout_s)})


def redact(text: str) -> str:
    """`text` with the values of credential-carrying query parameters replaced by [REDACTED]."""
    return _SECRET_RE.sub(r"\1[REDACTED]", text)


class RedactQueryFilter(logging.Filter):
    """Redacts credentials from query strings in log records (uvicorn's access log passes the
    path with its query string as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_log_redaction() -> None:
    """Idempotent: the filter on uvicorn's access and error loggers (after uvicorn configured
    logging, which replaces handlers but keeps logger filters)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
            logger.addFilter(RedactQueryFilter())


def uvicorn_config(app: Any, head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn.Config every reward server runs with (`sfr serve`, BackgroundServer)."""
    cfg = uvicorn.Config(app, http=protocol_class(head_timeout_s), **kwargs)
    install_log_redaction()
    return cfg

