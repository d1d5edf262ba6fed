"""Who is asking: the app of a gate key (``X-Gate-Key``), or one fixed app.

Multi-tenant: every request carries ``X-Gate-Key: gk_...``, verified with the sidecar's
``KeyStore`` (scope ``check``); the key's app is the requester's app. Single-tenant: the
proxy is started with ``app_id`` and no key store. ``X-Gate-User`` names the app's end
user and ``X-Gate-Purpose`` the declared purpose. The upstream's own ``Authorization``
header is not ours: it is neither read nor logged, and passes through to the upstream.
"""

from __future__ import annotations

import re

import anyio.to_thread
from fastapi import Request

from gate.api.keys import ApiKey, KeyStore
from gate.api.limits import RateLimiter
from gate.proxy.guard import Caller
from gate.proxy.types import Malformed, ProxyError
from gate.types import Requester

_USER_RE = re.compile(r"^[^\x00-\x1f]{1,256}$")


class Authenticator:
    def __init__(self, key_store: KeyStore | None, app_id: str | None,
                 limiter: RateLimiter) -> None:
        if (key_store is None) == (app_id is None):
            raise ValueError("give either key_store (gate keys) or app_id (single tenant)")
        self.key_store = key_store
        self.app_id = app_id
        self.limiter = limiter

    async def caller(self, request: Request) -> Caller:
        jurisdictions: tuple[str, ...] = ()
        if self.key_store is None:
            app_id = self.app_id
        else:
            key = await self._key(request)
            app_id, jurisdictions = key.app_id, key.jurisdictions
        assert app_id is not None
        request.state.app_id = app_id  # the access log names the app, never the key
        user_id = _header(request, "x-gate-user", "X-Gate-User")
        purpose = _header(request, "x-gate-purpose", "X-Gate-Purpose", limit=200)
        return Caller(requester=Requester(app_id=app_id, user_id=user_id),
                      jurisdictions=jurisdictions,
                      request_id=request.state.request_id, purpose=purpose)

    async def _key(self, request: Request) -> ApiKey:
        assert self.key_store is not None
        token = request.headers.get("x-gate-key")
        if not token:
            raise ProxyError(401, "unauthorized", "a gate key is required: X-Gate-Key: gk_...")
        key = await anyio.to_thread.run_sync(self.key_store.verify, token)
        if key is None:
            raise ProxyError(401, "unauthorized", "the gate key is invalid or revoked")
        if "check" not in key.scopes:
            raise ProxyError(403, "forbidden", "this gate key lacks the 'check' scope")
        retry_after = self.limiter.take(key.key_id)
        if retry_after is not None:
            raise ProxyError(429, "rate_limited", "too many requests for this gate key",
                             headers={"Retry-After": str(retry_after)})
        return key


def _header(request: Request, name: str, shown: str, limit: int = 256) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _USER_RE.match(value) or len(value) > limit:
        raise Malformed(f"the {shown} header must be 1-{limit} printable characters",
                        param=shown)
    return value
