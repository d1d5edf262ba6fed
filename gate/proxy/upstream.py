"""The upstream image API, called with httpx (async), bounded in time and size.

Requests keep the client's end-to-end headers, ``Authorization`` included and untouched;
hop-by-hop headers and the gate's own ``X-Gate-*`` headers are dropped. Redirects are not
followed. Image URLs in upstream answers are fetched only from the upstream's own host or
from hosts the operator listed (``GATE_PROXY_IMAGE_URL_HOSTS``), never from any other
address, so a response cannot steer the proxy into the internal network (SSRF).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gate.proxy.types import BadUpstream, Forward, ProxyError

_DROP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "content-type",
    "accept-encoding", "expect", "content-encoding",
})


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    content_type: str
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            raise BadUpstream("the upstream answer is not valid JSON") from None


def forwarded_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """The client's headers to send upstream (``Authorization`` passes through as is)."""
    return {k: v for k, v in incoming.items()
            if k.lower() not in _DROP and not k.lower().startswith("x-gate-")}


class Upstream:
    """One upstream API at ``base_url``."""

    def __init__(self, base_url: str, *, timeout_s: float, max_response_bytes: int,
                 image_hosts: Sequence[str] = ()) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the upstream must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self._origin = (parts.scheme, parts.hostname.lower(), parts.port)
        self._image_hosts = {h.lower() for h in image_hosts}
        self._max = max_response_bytes
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                         trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, forward: Forward, incoming: Mapping[str, str]) -> UpstreamResponse:
        headers = forwarded_headers(incoming)
        if forward.content_type:
            headers["content-type"] = forward.content_type
        return await self._request(forward.method, self.base_url + forward.path, headers,
                                   content=forward.content or None, params=forward.params)

    async def get(self, path: str, params: Sequence[tuple[str, str]],
                  incoming: Mapping[str, str]) -> UpstreamResponse:
        return await self._request("GET", self.base_url + path, forwarded_headers(incoming),
                                   params=params)

    async def fetch_image(self, url: str, incoming: Mapping[str, str]) -> bytes:
        """An output image named by URL, from the upstream's host or an allowed host only."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        same = (parts.scheme, host, parts.port) == self._origin
        if parts.scheme not in ("http", "https") or not (same or host in self._image_hosts):
            raise BadUpstream("the upstream answered an image URL on a host the gate may not "
                              "fetch from; ask for response_format=b64_json",
                              code="image_url_refused")
        headers = forwarded_headers(incoming) if same else {}
        response = await self._request("GET", url, headers)
        if not response.ok:
            raise BadUpstream(f"fetching an output image failed with {response.status}")
        return response.content

    async def _request(self, method: str, url: str, headers: dict[str, str], *,
                       content: bytes | None = None,
                       params: Sequence[tuple[str, str]] = ()) -> UpstreamResponse:
        try:
            async with self._client.stream(method, url, headers=headers, content=content,
                                           params=list(params)) as response:
                chunks: list[bytes] = []
                seen = 0
                async for chunk in response.aiter_bytes():
                    seen += len(chunk)
                    if seen > self._max:
                        raise BadUpstream(f"the upstream answer is larger than {self._max} "
                                          "bytes", code="upstream_too_large")
                    chunks.append(chunk)
                return UpstreamResponse(response.status_code,
                                        response.headers.get("content-type", ""),
                                        b"".join(chunks))
        except httpx.TimeoutException:
            raise ProxyError(504, "upstream_timeout", "the upstream did not answer in time") \
                from None
        except httpx.HTTPError:
            raise ProxyError(502, "upstream_unreachable", "the upstream could not be reached") \
                from None
