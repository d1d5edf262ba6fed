"""What the proxy reads in a body: inline images in every encoding an upstream could
decode, URLs and file paths, strict JSON and strict multipart (each refusal a clear 4xx)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.proxy import media
from gate.proxy.body import dump_json, encode_multipart, parse_json, parse_multipart
from gate.proxy.types import Malformed
from tests.proxy.conftest import PROTECTED
from tests.proxy.test_smuggling import (
    BOUNDARY,
    PROTECTED_PPM,
    data_url,
    form,
    junk_b64,
    urlsafe_b64,
)

B64 = base64.b64encode(PROTECTED).decode("ascii")


@pytest.mark.parametrize("value", [
    B64, data_url(PROTECTED), data_url(PROTECTED, "application/x-face"), junk_b64(PROTECTED),
    "\n".join(B64[i:i + 76] for i in range(0, len(B64), 76)), f"  {B64}  ",
    "data:image/png," + "".join(f"%{b:02x}" for b in PROTECTED),
])
def test_every_reading_of_an_inline_image_is_found_and_canonicalised(value: str) -> None:
    found = media.inline_media(value)
    assert found is not None and found[0] == PROTECTED
    assert base64.b64decode(found[1].split(",")[-1], validate=True) == PROTECTED


def test_formats_pillow_opens_count_as_images() -> None:
    found = media.inline_media(base64.b64encode(PROTECTED_PPM).decode())
    assert found is not None and found[0] == PROTECTED_PPM


def test_two_readings_are_refused() -> None:
    with pytest.raises(Malformed) as exc:
        media.inline_media(urlsafe_b64(PROTECTED))
    assert exc.value.code == "ambiguous_image"


@pytest.mark.parametrize("value", [
    "a lighthouse at dusk, oil painting, warm light, highly detailed, masterpiece" * 4,
    "DPM++ 2M Karras", "v1-5-pruned-emaonly.safetensors", "", "A" * 4000,
])
def test_ordinary_values_are_not_images(value: str) -> None:
    assert media.inline_media(value) is None


def test_prompts_are_read_strictly() -> None:
    assert media.inline_media(junk_b64(PROTECTED), strict=True) is None
    assert media.inline_media(B64, strict=True) is not None


@pytest.mark.parametrize(("value", "url", "path"), [
    ("https://faces.example/pat", True, False), ("ftp://x/y", True, False),
    ("//cdn.example/pat", True, False), ("/srv/faces", False, True),
    ("C:\\faces\\pat.png", False, True), ("faces/pat.JPG", False, True),
    ("pat.png [input]", False, True), ("clip.latent", False, True),
    ("sdxl/model.safetensors", False, False), ("a boat", False, False),
])
def test_urls_and_file_paths(value: str, url: bool, path: bool) -> None:
    assert media.is_url(value) is url
    assert media.is_file_path(value) is path


def test_scan_reports_paths_and_refuses_what_cannot_be_walked() -> None:
    doc: dict[str, Any] = {"a": [B64, {"u": "https://x.example/f", "p": "/srv/f"}],
                           "prompt": f"see https://x.example {B64}"}
    found = media.scan(doc, text=lambda p: p == ("prompt",))
    assert [i.path for i in found.images] == [("a", 0)]
    assert found.urls == (("a", 1, "u"),) and found.files == (("a", 1, "p"),)
    assert found.doc["a"][0] == B64 and found.doc["prompt"] == doc["prompt"]
    deep: Any = B64
    for _ in range(media.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(Malformed, match="nested deeper"):
        media.scan(deep)
    with pytest.raises(Malformed) as exc:
        media.scan({B64: 1})
    assert exc.value.code == "unexpected_image"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20))
def test_scan_never_changes_a_document_without_images(doc: Any) -> None:
    assert media.scan(doc).doc == doc


# --------------------------------------------------------------------------- JSON


def test_json_is_strict_and_forwarded_canonical() -> None:
    for body in (b'{"a": NaN}', b'{"a": Infinity}', b"[" * 100_000, b'{"a": 1, "a": 2}'):
        with pytest.raises(Malformed):
            parse_json(body)
    doc = parse_json('{"prompt": "caf\u00e9 \\ud83d\\ude00"}'.encode())
    assert dump_json(doc) == b'{"prompt":"caf\\u00e9 \\ud83d\\ude00"}'


# --------------------------------------------------------------------------- multipart


def _parse(*parts: tuple[list[str], bytes]) -> Any:
    body, headers = form(*parts)
    return parse_multipart(body, headers["content-type"])


@pytest.mark.parametrize("headers", [
    ['Content-Disposition: form-data; name="image"',
     'Content-Disposition: form-data; name="x"'],
    ['Content-Disposition: form-data; name="image"', "Content-Type: image/png",
     "Content-Type: text/plain"],
    ['Content-Disposition: form-data; name="a"; name="image"'],
    ["Content-Disposition: form-data; name=\"a\"; name*=UTF-8''image"],
    ["Content-Disposition: form-data; name=\"image\"; filename*=UTF-8''a.png"],
    ['Content-Disposition: form-data; name="image"; filename="a.png"; size=3'],
    ['Content-Disposition: form-data; name="image"', "Content-Transfer-Encoding: base64"],
    ['Content-Disposition: form-data; name="image"', "X-Extra: 1"],
    ['Content-Disposition: form-data; name="image"',
     "Content-Type: multipart/mixed; boundary=inner"],
    ['Content-Disposition: form-data; name="image"', "Content-Type: message/rfc822"],
    ['Content-Disposition: attachment; name="image"'],
    ['Content-Disposition: form-data; name="ima\\"ge"'],
    ['Content-Disposition: form-data; name=image"x'],
    ['Content-Disposition : form-data; name="image"'],
])
def test_ambiguous_parts_are_refused(headers: list[str]) -> None:
    with pytest.raises(Malformed) as exc:
        _parse((headers, b"data"))
    assert exc.value.code in ("ambiguous_multipart", "invalid_request")


def test_plain_parts_parse_and_re_encode() -> None:
    parts = _parse(
        (['content-disposition: form-data; name=prompt'], b"a hat"),
        (['Content-Disposition: form-data; name="image[]"; filename="a b.png"',
          "Content-Type: image/png"], PROTECTED))
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("prompt", None, None), ("image[]", "a b.png", "image/png")]
    body, content_type = encode_multipart(parts)
    assert parse_multipart(body, content_type) == parts
    assert BOUNDARY not in content_type
    with pytest.raises(Malformed, match="no name"):
        _parse((['Content-Disposition: form-data; filename="a.png"'], b"x"))
    unterminated = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nDATA\r\n'
    with pytest.raises(Malformed, match="not terminated"):
        parse_multipart(unterminated, "multipart/form-data; boundary=b")
