"""Reading request bodies within a byte limit, and parsing them in memory.

``read_body`` refuses a declared ``Content-Length`` above the limit before reading a byte,
then counts bytes as they stream in and stops as soon as the count passes the limit, so an
oversized or chunked body is never buffered whole. Multipart bodies are parsed in memory
(never spooled to disk): image bytes live only as long as the request.

Parsing is strict, so that the gate and the upstream cannot read a body two ways: JSON with
a repeated key or ``NaN`` is refused, a form part's headers must be exactly one plain
``Content-Disposition: form-data`` and at most one simple ``Content-Type``. What is
forwarded is re-encoded from what was parsed (``dump_json``, ``encode_multipart``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header

from gate.proxy.types import Malformed, Part, ProxyError

_MAX_PARTS = 64


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
    """The JSON document, or ``Malformed`` with ``status`` (400, or 422 for FastAPI apps).

    Strict JSON: a repeated key, ``NaN``/``Infinity`` and documents nested deeper than
    Python can parse are refused (the upstream might read them differently).
    """
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise Malformed(f"the JSON key '{exc.key}' is repeated", param=exc.key,
                        status=status) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("the request body is not valid JSON", status=status) from None


def dump_json(doc: Any) -> bytes:
    """The body forwarded upstream: re-serialised from the parsed (and checked) document,
    plain ASCII, so the upstream cannot read a byte the gate did not parse."""
    return json.dumps(doc, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii")


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


def _no_constant(name: str) -> Any:
    raise ValueError(name)


# --------------------------------------------------------------------------- multipart

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = rf'(?:{_TCHARS}|"[^"\\\r\n]*")'
_DISPOSITION = re.compile(rf"form-data((?:\s*;\s*{_TCHARS}\s*=\s*{_VALUE})*)\s*",
                          re.IGNORECASE)
_CONTENT_TYPE = re.compile(rf"({_TCHARS}/{_TCHARS})((?:\s*;\s*{_TCHARS}\s*=\s*{_VALUE})*)\s*")
_PARAM = re.compile(rf"\s*;\s*({_TCHARS})\s*=\s*({_VALUE})")
_PART_HEADERS = frozenset({"content-disposition", "content-type"})


def _ambiguous(why: str) -> Malformed:
    return Malformed(f"a form part is ambiguous ({why}); the consent gate refuses parts the "
                     "upstream could read differently", code="ambiguous_multipart")


def _params(text: str, allowed: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for match in _PARAM.finditer(text):
        key, value = match.group(1).lower(), match.group(2)
        if key not in allowed:
            raise _ambiguous(f"the parameter '{key[:32]}'")
        if key in out:
            raise _ambiguous(f"the parameter '{key}' is repeated")
        out[key] = value[1:-1] if value.startswith('"') else value
    return out


def _part(headers: list[tuple[str, bytes]], data: bytes) -> Part:
    """One part, from headers that leave no room for another reading: exactly one
    ``Content-Disposition: form-data; name=...[; filename=...]`` and at most one simple
    ``Content-Type``; nothing else (no ``filename*``, no ``Content-Transfer-Encoding``, no
    nested multipart)."""
    seen: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name not in _PART_HEADERS:
            raise _ambiguous(f"the header '{raw_name[:32]}'")
        if name in seen:
            raise _ambiguous(f"the header '{raw_name}' is repeated")
        try:
            seen[name] = raw_value.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _ambiguous("a header is not UTF-8") from None
    match = _DISPOSITION.fullmatch(seen.get("content-disposition", ""))
    if match is None:
        raise _ambiguous("its Content-Disposition is not form-data with plain parameters")
    disposition = _params(match.group(1), frozenset({"name", "filename"}))
    if "name" not in disposition:
        raise Malformed("a form part has no name")
    content_type = None
    if "content-type" in seen:
        ctype = _CONTENT_TYPE.fullmatch(seen["content-type"])
        if ctype is None or ctype.group(1).lower().startswith(("multipart/", "message/")):
            raise _ambiguous("its Content-Type")
        content_type = seen["content-type"]
    return Part(name=disposition["name"], data=data, filename=disposition.get("filename"),
                content_type=content_type)


def parse_multipart(body: bytes, content_type: str | None) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order (see ``_part`` for what a
    part may look like)."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Malformed("send multipart/form-data with a boundary")
    parts: list[Part] = []
    headers: list[tuple[str, bytes]] = []
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_begin() -> None:
        field.clear()
        value.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        value.append(buf[start:end])

    def on_header_end() -> None:
        name = b"".join(field)
        if re.fullmatch(_TCHARS.encode(), name) is None:
            raise _ambiguous("a header name is malformed")
        headers.append((name.decode("ascii"), b"".join(value)))

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        if len(parts) >= _MAX_PARTS:
            raise Malformed(f"more than {_MAX_PARTS} form parts")
        parts.append(_part(headers, b"".join(data)))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_begin": on_header_begin,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise Malformed("the multipart body is malformed") from None
    if parser.state != MultipartState.END:  # no closing boundary: a part may be cut off
        raise Malformed("the multipart body is not terminated")
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
