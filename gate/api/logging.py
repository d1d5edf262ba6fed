"""JSON logs with request ids, and the middleware that assigns the ids.

Log lines carry only allow-listed fields: ids, method, route, status, timings, verdicts,
rule ids, fault classes. Never image bytes, embeddings, API keys or personal names:
``extra`` fields outside the allow-list are dropped, whatever a caller passes.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("gate_request_id", default=None)

#: The only ``extra`` fields a log line may carry.
SAFE_FIELDS = frozenset({
    "request_id", "method", "route", "status", "duration_ms", "app_id", "key_id",
    "verdict", "rule_ids", "fault", "packs", "host", "port", "replica",
})
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
access_log = logging.getLogger("gate.api.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the safe extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            line["request_id"] = rid
        for name in SAFE_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__  # the class only, no message
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send ``gate`` and ``uvicorn`` logs to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("gate", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # ours has the request id


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


class RequestContext:
    """Pure ASGI middleware: request id (``X-Request-ID`` in and out) and an access log.

    ``observe(route, method, status, seconds)`` is called once per request (metrics).
    """

    def __init__(self, app: ASGIApp,
                 observe: Callable[[str, str, int, float], None] | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given and _REQUEST_ID_RE.match(given) else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        token = request_id_var.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if self.observe is not None:
                self.observe(route, scope["method"], status, elapsed)
            access_log.info("request", extra={
                "method": scope["method"], "route": route, "status": status,
                "duration_ms": round(elapsed * 1000, 2), "app_id": state.get("app_id")})
            request_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
