"""API-key authentication and scopes.

``Authorization: Bearer gk_<key_id>_<secret>``. No key or an invalid/revoked key: 401.
A key without the route's scope: 403. Over the key's rate: 429 with ``Retry-After``.
The verified key's ``app_id`` is the requester's app for every decision it asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gate.api.errors import Forbidden, RateLimited, Unauthorized
from gate.api.keys import ApiKey
from gate.api.services import services

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key from `gate keys create`: `Bearer gk_...`.")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def require(scope: str, *also: str) -> Callable[..., ApiKey]:
    """A dependency that admits keys holding ``scope`` (or one of ``also``; sync: runs in
    the thread pool)."""
    accepted = (scope, *also)

    def dependency(request: Request, credentials: Credentials) -> ApiKey:
        svc = services(request)
        if credentials is None:
            raise Unauthorized("an API key is required: Authorization: Bearer gk_...")
        key = svc.keys.verify(credentials.credentials)
        if key is None:
            raise Unauthorized("the API key is invalid or revoked")
        request.state.app_id = key.app_id
        if not any(s in key.scopes for s in accepted):
            raise Forbidden(f"this API key lacks the '{scope}' scope" if not also else
                            f"this API key lacks a scope of {list(accepted)}")
        retry_after = svc.limiter.take(key.key_id)
        if retry_after is not None:
            raise RateLimited(retry_after)
        return key

    dependency.__name__ = f"require_{'_or_'.join(accepted)}"
    return dependency


#: A key with the ``check`` scope (the requester's app is ``key.app_id``).
CheckKey = Annotated[ApiKey, Depends(require("check"))]
#: A key with the operator-level ``admin`` scope.
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
