"""Knobs of the HTTP sidecar, read from the environment with the ``GATE_API_`` prefix.

The engine's own settings (models, database, limits) stay in ``gate.settings.Settings``
(``GATE_`` prefix); these only shape the HTTP door in front of it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """``GATE_API_MAX_BODY_BYTES=...``, ``GATE_API_CHECK_TIMEOUT_S=...``, etc."""

    model_config = SettingsConfigDict(env_prefix="GATE_API_", extra="forbid", frozen=True)

    #: Largest request body accepted, counted while it streams in (413 above it). Base64
    #: images in JSON grow by a third, so the default leaves room for one 20 MiB image.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    #: Seconds a decision may take before the request answers 503 ``check_timeout``.
    check_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    #: Decisions computed at once per process (more wait their turn; models use the cores).
    max_concurrent_checks: int = Field(default=4, ge=1, le=256)
    #: Per-key token bucket: sustained requests per second (0 turns rate limiting off).
    rate_limit_per_s: float = Field(default=50.0, ge=0.0)
    #: Per-key token bucket: burst size.
    rate_limit_burst: int = Field(default=100, ge=1)
    #: ``public``: /metrics needs no key (bind the port to a private network); ``admin``:
    #: /metrics needs a key with the ``admin`` scope.
    metrics_auth: Literal["public", "admin"] = "public"
    #: Log level of the JSON logs.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
