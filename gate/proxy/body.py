"""Reading request bodies within a byte limit, and parsing them in memory.

``read_body`` refuses a declared ``Content-Length`` above the limit before reading a byte,
then counts bytes as they stream in and stops as soon as the count passes the limit, so an
oversized or chunked body is never buffered whole. Multipart bodies are parsed in memory
(never spooled to disk): image bytes live only as long as the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from gate.imaging.decode import sniff_format
from gate.proxy.types import Malformed, Part, ProxyError

_MAX_PARTS = 64
DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


class BodyTooLarge(ProxyError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large",
                         f"the request body is larger than {limit} bytes")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            raise Malformed("the Content-Length header is not a number") from None
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, *, status: int = 400) -> Any:
    """The JSON document, or ``Malformed`` with ``status`` (400, or 422 for FastAPI apps)."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise Malformed(f"the JSON key '{exc.key}' is repeated", param=exc.key,
                        status=status) from None
    except (ValueError, UnicodeDecodeError):
        raise Malformed("the request body is not valid JSON", status=status) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key is refused: the upstream might read another copy than the gate."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key[:64])
        out[key] = value
    return out


def parse_multipart(body: bytes, content_type: str | None) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Malformed("send multipart/form-data with a boundary")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    data: list[bytes] = []

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        headers[b"".join(field).lower()] = headers.get(b"".join(field).lower(), b"") + \
            buf[start:end]

    def on_header_end() -> None:
        field.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        if len(parts) >= _MAX_PARTS:
            raise Malformed(f"more than {_MAX_PARTS} form parts")
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name")
        if name is None:
            raise Malformed("a form part has no name")
        filename = disposition.get(b"filename")
        ctype = headers.get(b"content-type")
        parts.append(Part(
            name=name.decode("utf-8", "replace"), data=b"".join(data),
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=ctype.decode("latin-1") if ctype else None))
        headers.clear()
        data.clear()

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise Malformed("the multipart body is malformed") from None
    return parts


def encode_multipart(parts: Sequence[Part]) -> tuple[bytes, str]:
    """``(body, content_type)`` of a multipart/form-data body holding ``parts``."""
    boundary = f"consent-gate-{secrets.token_hex(12)}"
    out: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{_quote(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quote(part.filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type:
            head += f"Content-Type: {part.content_type}\r\n"
        out += [head.encode("utf-8"), b"\r\n", part.data, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def inline_image(value: str) -> bytes | None:
    """The bytes of an image given inline as base64 or a data URL, else ``None``."""
    try:
        data = base64.b64decode("".join(DATA_URL.sub("", value, count=1).split()),
                                validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if sniff_format(data) is not None else None
