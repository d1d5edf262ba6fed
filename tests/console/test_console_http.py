"""``/console`` over HTTP: the page and its assets are served from an allow-list with the
portal's security headers; the page is public static content and holds no data; every
data call it makes needs an ``admin`` key; nothing outside the allow-list is served."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from gate.api.routes import console
from gate.api.routes.portal import SECURITY_HEADERS as PORTAL_HEADERS
from tests.console import ConsoleKeys, console_app, console_keys

with warnings.catch_warnings():  # starlette suggests httpx2; TestClient works on httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TYPES = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One fake-model gate for the module (these tests only read, or add a report)."""
    from gate.engine import FaceGate

    face_gate = FaceGate.open(tmp_path_factory.mktemp("console") / "data", detector="fake",
                              embedder="fake", match_threshold=0.9)
    yield face_gate
    face_gate.close()


@pytest.fixture(scope="module")
def client(gate: Any) -> Iterator[TestClient]:
    with TestClient(console_app(gate), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def keys(gate: Any) -> ConsoleKeys:
    return console_keys(gate)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _Assets(HTMLParser):
    """Scripts, stylesheets and inline code/handlers of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.refs.append(a["src"] or "")
            else:
                self._in_script = True
        if tag == "link" and a.get("rel") == "stylesheet":
            self.refs.append(a.get("href") or "")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag}[{k}]" for k in a if k == "style" or k.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> body")


def assert_secured(response: Any) -> None:
    for name in PORTAL_HEADERS:
        assert name in response.headers, name
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


def test_console_redirects_to_its_page(client: TestClient) -> None:
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/console/"


@pytest.mark.parametrize("path", ["/console/", "/console/index.html", "/console/console.js",
                                  "/console/console.css"])
def test_page_and_assets_are_served_with_the_portal_security_headers(
        client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    name = path.rsplit("/", 1)[1] or "index.html"
    assert r.headers["content-type"].split(";")[0] == TYPES[name]
    assert_secured(r)
    assert r.content == (console.CONSOLE_DIR / name).read_bytes()


def test_page_is_csp_compatible_and_self_contained(client: TestClient) -> None:
    html = client.get("/console/").text
    parser = _Assets()
    parser.feed(html)
    assert parser.inline == []  # no inline script, style or event handler
    assert parser.refs  # and every asset it names is served from this origin
    for ref in parser.refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        r = client.get(ref)
        assert r.status_code == 200, ref
        assert r.headers["content-security-policy"]
    for name in console.CONSOLE_FILES:
        text = (console.CONSOLE_DIR / name).read_text()
        assert not re.search(r"https?://|//cdn|@import|url\(", text), name  # no other origin
    script = (console.CONSOLE_DIR / "console.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script
    assert "document.cookie" not in script and "localStorage" not in script
    assert "sessionStorage" in script
    # the key input is never submitted by the form, even without JavaScript
    key_input = re.search(r'<input[^>]*id="key"[^>]*>', html)
    assert key_input is not None and " name=" not in key_input.group(0)
    assert 'method="post"' in html


def test_page_is_accessible_markup(client: TestClient) -> None:
    html = client.get("/console/").text
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert 'aria-live="polite"' in html and 'role="status"' in html
    ids = set(re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html))
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    assert ids and ids <= labelled, ids - labelled  # every control has a label
    for section in ("reports", "trace", "blocklist", "audit"):
        assert f'id="{section}-h"' in html


def test_page_holds_no_data(client: TestClient, keys: ConsoleKeys) -> None:
    r = client.post("/v1/reports", headers=bearer(keys.admin),
                    json={"pdq": ["ab" * 32], "reason": "other"})
    assert r.status_code == 201, r.text
    report_id = r.json()["report_id"]
    for path in ("/console/", "/console/console.js"):
        assert report_id not in client.get(path).text
        assert "ab" * 32 not in client.get(path).text


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/reports"), ("GET", "/v1/reports?overdue=true"),
    ("GET", "/v1/blocklist"), ("GET", "/v1/blocklist/export"), ("GET", "/v1/audit"),
    ("GET", "/v1/audit/requests/req_x"), ("POST", "/v1/audit/verify"),
    ("POST", "/v1/reports/rpt_x/resolve"), ("DELETE", "/v1/blocklist/blk_x"),
])
def test_the_data_the_page_calls_for_needs_an_admin_key(
        client: TestClient, keys: ConsoleKeys, method: str, path: str) -> None:
    anonymous = client.request(method, path)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    wrong = client.request(method, path, headers=bearer(keys.studio))  # a check key
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "forbidden"


def test_trace_needs_an_admin_key(client: TestClient, keys: ConsoleKeys) -> None:
    files = {"image": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    assert client.post("/v1/trace", files=files).status_code == 401
    assert client.post("/v1/trace", files=files, headers=bearer(keys.studio)).status_code == 403


@pytest.mark.parametrize("path", [
    "/console/..%2fapp.py", "/console/..%2F..%2Fapi%2Fapp.py", "/console/%2e%2e",
    "/console/%2e%2e%2froutes%2fconsole.py", "/console/..%5capp.py",
    "/console/index.html%00", "/console/.%2findex.html", "/console/console.py",
    "/console/style.css", "/console/../app.py", "/console/index.html/x",
    "/console/%252e%252e%252fapp.py", "/console/INDEX.HTML",
])
def test_nothing_outside_the_allow_list_is_served(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "import" not in r.text and "<html" not in r.text
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_page_is_read_only(client: TestClient, method: str) -> None:
    r = client.request(method, "/console/", content=b"key=gk_x")
    assert r.status_code == 405
