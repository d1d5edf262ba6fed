"""Knobs of the proxy, read from the environment with the ``GATE_PROXY_`` prefix.

The engine's own settings stay in ``gate.settings.Settings`` (``GATE_`` prefix), among them
the check deadline and the number of concurrent checks: the proxy adds none of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProxySettings(BaseSettings):
    """``GATE_PROXY_MAX_BODY_BYTES=...``, ``GATE_PROXY_CONTENT_PRODUCER=...``, etc."""

    model_config = SettingsConfigDict(env_prefix="GATE_PROXY_", extra="forbid", frozen=True)

    #: Largest request body accepted: a larger ``Content-Length`` is refused before any byte
    #: is read, and a streamed body is refused as soon as the count passes the limit (413).
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    #: Largest upstream response (or fetched output image) read; larger answers 502.
    max_response_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    #: Seconds an upstream call may take (generations are slow).
    upstream_timeout_s: float = Field(default=300.0, gt=0.0)
    #: Per-key token bucket (requests per second; 0 turns it off) and burst.
    rate_limit_per_s: float = Field(default=0.0, ge=0.0)
    rate_limit_burst: int = Field(default=100, ge=1)
    #: ``ContentProducer`` of the implicit AI-content label (GB 45438-2025 metadata).
    content_producer: str = Field(default="consent-gate", min_length=1, max_length=200)
    #: Hosts, besides the upstream's own, from which ``url`` outputs may be fetched for
    #: screening (e.g. an image CDN of the upstream). Nothing else is ever fetched.
    image_url_hosts: list[str] = Field(default_factory=list)
    #: C2PA signing (obligation ``embed_c2pa_manifest``): PEM certificate chain and key.
    c2pa_cert_file: Path | None = None
    c2pa_key_file: Path | None = None
    c2pa_alg: Literal["es256", "es384", "ps256", "ed25519"] = "es256"
    #: ComfyUI: how many uploads / prompts / outputs are remembered, and for how long.
    comfyui_ledger_items: int = Field(default=10_000, ge=1)
    comfyui_ledger_ttl_s: float = Field(default=24 * 3600.0, gt=0.0)
