"""The operator console in headless Chromium (Debian's ``chromium``, driven by Playwright).

A real uvicorn server over a fake-model gate (the watermark, PDQ, reports and audit parts
are the real ones). Seeded through the API: an allowed txt2img check, its output labelled
with a check key, a report on that output (traced), an overdue report (its deadline moved
into the past in the database) and one that another operator resolves meanwhile. Then, in
the browser: sign in with the admin key, see the queue (the overdue one first and
highlighted, the trace, the countdown), resolve one, meet the 409, trace a re-posted copy
and an unmarked photo, file a report on the latter, remove a blocklist entry, import and
export a list, search the audit by request id and verify the chain; at desktop size and at
375x812 (no horizontal overflow); sign out. No key ever appears in a URL; no request
leaves the origin; no CSP violation or script error is logged. Screenshots go to
$GATE_SCREENSHOT_DIR (default /tmp); their paths are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from sqlalchemy import update

from gate.clock import utcnow
from gate.engine import FaceGate
from gate.incident import tables
from tests.conftest import picture_png
from tests.console import ConsoleKeys, console_app, console_keys
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("GATE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("GATE_SCREENSHOT_DIR", "/tmp"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
TABS = {"reports": "Reports queue", "trace": "Trace an image", "blocklist": "Blocklist",
        "audit": "Audit search"}


def picture(seed: int, size: tuple[int, int] = (480, 640)) -> bytes:
    return picture_png(seed, size)


def reposted(data: bytes) -> bytes:
    """A leaked copy: 5 % border crop, 70 % resize, JPEG q75."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    h, w = image.shape[:2]
    image = image[h // 20:h - h // 20, w // 20:w - w // 20]
    image = cv2.resize(image, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


@dataclass(frozen=True)
class Seeded:
    request_id: str  # the allowed txt2img request whose output was labelled
    labelled: bytes
    traced: str  # report on the labelled output (trace found)
    overdue: str  # report past its deadline
    stale: str  # report another operator resolves while the page shows it open


@dataclass(frozen=True)
class Server:
    url: str
    gate: FaceGate
    keys: ConsoleKeys


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM} (set GATE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright (the Python package) is not installed")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport=DESKTOP, accept_downloads=True)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def server(fake_gate: FaceGate) -> Iterator[Server]:
    """uvicorn in a thread, serving the sidecar app (console included) over ``fake_gate``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    uv = uvicorn.Server(uvicorn.Config(console_app(fake_gate, public_url=url),
                                       host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Server(url, fake_gate, console_keys(fake_gate))
    finally:
        uv.should_exit = True
        thread.join(15)


def seed(server: Server) -> Seeded:
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    with httpx.Client(base_url=server.url, timeout=60) as api:
        check = api.post("/v1/check", headers=auth(server.keys.studio),
                         json={"operation": "txt2img", "prompt": "a lighthouse at dusk"})
        assert check.status_code == 200 and check.json()["verdict"] == "allow", check.text
        request_id = check.json()["request_id"]
        labelled = api.post("/v1/label-output", headers=auth(server.keys.studio),
                            files={"image": ("out.png", picture(1), "image/png")},
                            data={"request_id": request_id})
        assert labelled.headers.get("x-gate-watermarked") == "true", labelled.text
        traced = api.post("/v1/reports", headers=auth(server.keys.studio),
                          files={"image": ("leak.png", labelled.content, "image/png")},
                          data={"reason": "ncii", "contact": "reporter@example.org"})
        assert traced.status_code == 201 and traced.json()["trace"]["found"], traced.text
        ids = []
        for pdq, reason in (("f0" * 32, "impersonation"), ("0f" * 32, "other")):
            r = api.post("/v1/reports", headers=auth(server.keys.admin),
                         json={"pdq": [pdq], "reason": reason})
            assert r.status_code == 201, r.text
            ids.append(r.json()["report_id"])
    desk = server.gate.incident
    assert desk is not None
    with desk.reports.engine.begin() as conn:  # three hours past its 48-hour deadline
        conn.execute(update(tables.reports).where(tables.reports.c.report_id == ids[0])
                     .values(created_at=utcnow() - timedelta(hours=51),
                             deadline=utcnow() - timedelta(hours=3)))
    return Seeded(request_id, labelled.content, traced.json()["report_id"], ids[0], ids[1])


def shoot(page: Any, name: str, shots: list[Path]) -> None:
    path = SHOTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path)


def no_horizontal_overflow(page: Any) -> None:
    widths = page.evaluate("""() => ({doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth, view: window.innerWidth,
        wide: Array.from(document.querySelectorAll('body *')).filter((e) => {
            const r = e.getBoundingClientRect();
            return r.width > 0 && (r.right > window.innerWidth + 0.5 || r.left < -0.5)
              && !e.closest('[hidden]') && !e.classList.contains('skip');
        }).map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)})""")
    assert widths["view"] == PHONE["width"]
    assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], widths
    assert widths["wide"] == [], widths


def test_console_in_chromium(browser_context: Any, server: Server,
                             capsys: pytest.CaptureFixture[str]) -> None:
    seeded = seed(server)
    keys = server.keys
    shots: list[Path] = []
    seen: list[tuple[str, str | None]] = []
    problems: list[str] = []
    page = browser_context.new_page()
    page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and "Failed to load resource" not in m.text else None)  # 4xx answers are expected
    api = httpx.Client(base_url=server.url, timeout=60,
                       headers={"Authorization": f"Bearer {keys.admin}"})
    try:
        # -- sign in: a check key is refused, the admin key is kept in this tab only ------
        page.goto(f"{server.url}/console")
        key_box = page.get_by_label("Operator API key")
        key_box.fill("gk_000000000000_" + "x" * 43)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("status").filter(has_text="not accepted").wait_for()
        assert page.evaluate("sessionStorage.length") == 0
        key_box.fill(keys.studio)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("status").filter(has_text="lacks the admin scope").wait_for()
        key_box.fill(keys.admin)
        key_box.press("Enter")
        cards = page.locator("#report-list > li")
        cards.nth(2).wait_for()
        page.reload()  # the tab keeps its key across a reload (and checks it again)
        cards.nth(2).wait_for()

        # -- the queue: overdue first and highlighted, the trace of the reported output ---
        first = cards.nth(0)
        assert first.get_attribute("data-report") == seeded.overdue
        assert "overdue" in (first.get_attribute("class") or "").split()
        assert "Overdue by 3 h" in first.inner_text()
        traced = page.locator(f"li[data-report='{seeded.traced}']")
        text = traced.inner_text()
        assert "Due in 47 h" in text or "Due in 48 h" in text
        assert seeded.request_id in text and "Chain verified" in text and "txt2img" in text
        assert "overdue" not in (traced.get_attribute("class") or "")
        assert page.locator("#report-summary").inner_text() == \
            "Showing 3 reports: 3 open, 1 overdue."
        assert page.evaluate("sessionStorage.getItem('consent-gate.console.key')") == keys.admin
        assert browser_context.cookies() == [] and keys.admin not in page.url
        shoot(page, "desktop-reports", shots)
        page.evaluate("""id => {  // the countdown moves on by itself (every 30 s)
            const clock = document.querySelector(`li[data-report='${id}'] .clock`);
            clock.dataset.deadline = new Date(Date.now() - 90 * 60000).toISOString();
            tickClocks(); }""", seeded.traced)
        assert "overdue" in (traced.get_attribute("class") or "").split()
        assert "Overdue by 1 h 30 min" in traced.inner_text()

        # -- resolve one --------------------------------------------------------------------
        traced.get_by_label("Actioned: taken down").check()
        traced.get_by_label("Reason (recorded and audited)").fill("removed from the host")
        traced.get_by_role("button", name="Resolve").click()
        page.get_by_role("status").filter(has_text=f"{seeded.traced} is now actioned").wait_for()
        page.locator(f"li[data-report='{seeded.traced}'] .badge.actioned").wait_for()
        done = api.get(f"/v1/reports/{seeded.traced}").json()
        assert done["status"] == "actioned" and done["resolution"] == "removed from the host"

        # -- another operator resolved this one meanwhile: 409, explained, refreshed -------
        assert api.post(f"/v1/reports/{seeded.stale}/resolve",
                        json={"status": "rejected", "reason": "duplicate"}).status_code == 200
        stale = page.locator(f"li[data-report='{seeded.stale}']")
        stale.get_by_label("Rejected: not a valid request").check()
        stale.get_by_label("Reason (recorded and audited)").fill("not NCII")
        stale.get_by_role("button", name="Resolve").click()
        page.get_by_role("status").filter(has_text="already resolved").wait_for()
        page.locator(f"li[data-report='{seeded.stale}'] .badge.rejected").wait_for()
        assert page.locator(f"li[data-report='{seeded.stale}'] form").count() == 0

        # -- trace a re-posted copy of the labelled output; an unmarked photo is not found --
        page.get_by_role("link", name="Trace an image").click()
        page.get_by_label("Image", exact=True).set_input_files(files=[{
            "name": "leak.jpg", "mimeType": "image/jpeg", "buffer": reposted(seeded.labelled)}])
        page.get_by_role("button", name="Trace", exact=True).click()
        result = page.locator("#trace-result.found")
        result.wait_for()
        assert seeded.request_id in result.inner_text()
        assert "Chain verified" in result.inner_text() and "studio" in result.inner_text()
        assert page.locator("#trace-result img.preview").evaluate("i => i.naturalWidth") > 0
        shoot(page, "desktop-trace", shots)
        page.get_by_role("button", name="Show the audit events of this request").click()
        page.locator("#audit:not([hidden]) #audit-list > li").first.wait_for()
        assert page.get_by_label("Request id").input_value() == seeded.request_id
        page.get_by_role("link", name="Trace an image").click()
        page.get_by_label("Image", exact=True).set_input_files(files=[{
            "name": "photo.png", "mimeType": "image/png", "buffer": picture(7)}])
        page.get_by_role("button", name="Trace", exact=True).click()
        page.locator("#trace-result.notfound").wait_for()
        assert "Not traced" in page.locator("#trace-result").inner_text()
        page.get_by_label("Reason", exact=True).select_option("other")
        page.get_by_label("Reporter's contact (optional)").fill("ops@example.org")
        page.get_by_role("button", name="File report").click()
        page.get_by_role("status").filter(has_text="blocked provisionally").wait_for()
        filed = [r for r in api.get("/v1/reports").json()
                 if r["report_id"] not in (seeded.traced, seeded.overdue, seeded.stale)]
        assert len(filed) == 1 and filed[0]["reason"] == "other"
        assert filed[0]["status"] == "open" and filed[0]["trace"]["found"] is False

        # -- blocklist: the overdue report's provisional entry, removed ----------------------
        page.get_by_role("link", name="Blocklist").click()
        entries = api.get("/v1/blocklist").json()["entries"]
        entry = next(e for e in entries if e["report_id"] == seeded.overdue)
        row = page.locator(f"tr[data-entry='{entry['entry_id']}']")
        row.wait_for()
        assert "provisional" in row.inner_text()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=f"Remove blocklist entry {entry['entry_id']}").click()
        page.get_by_role("status").filter(has_text="removed from the blocklist").wait_for()
        row.wait_for(state="detached")
        assert entry["entry_id"] not in [e["entry_id"] for e in
                                         api.get("/v1/blocklist").json()["entries"]]

        # -- import a shared list, export the confirmed entries ------------------------------
        shared = ["1" * 64, "2c" * 32]
        page.get_by_label("List name").fill("shared-ncii")
        page.get_by_label("…or paste the list").fill("".join(f"pdq {h}\n" for h in shared))
        page.get_by_role("button", name="Import").click()
        page.get_by_role("status").filter(has_text="Imported 2 entries").wait_for()
        page.locator("#blocklist-table").get_by_text("shared-ncii").first.wait_for()
        page.get_by_label("Format", exact=True).last.select_option("te-file")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download export").click()
        assert download.value.suggested_filename == "blocklist.txt"
        exported = Path(download.value.path()).read_text()
        assert all(f"pdq {h}" in exported for h in shared)
        shoot(page, "desktop-blocklist", shots)

        # -- audit search by request id, then the whole chain --------------------------------
        page.get_by_role("link", name="Audit search").click()
        page.get_by_label("Request id").fill("req_never_seen")
        page.get_by_role("button", name="Search").click()
        page.locator("#audit-result").get_by_text("No audit event is about request").wait_for()
        assert page.locator("#audit-list > li").count() == 0
        page.get_by_label("Request id").fill(seeded.request_id)
        page.get_by_role("button", name="Search").click()
        page.locator("#audit-result").get_by_text(re.compile(r"^\d+ events? about request")
                                                  ).wait_for()
        events = page.locator("#audit-list > li")
        assert events.count() >= 1 and "check" in events.first.inner_text()
        assert "txt2img" in events.first.inner_text()
        page.get_by_role("button", name="Verify the chain").click()
        page.locator("#verify-result.ok").get_by_text("Chain verified").wait_for()
        shoot(page, "desktop-audit", shots)

        # -- the same console on a phone --------------------------------------------------
        page.set_viewport_size(PHONE)
        for tab, name in TABS.items():
            page.get_by_role("link", name=name).click()
            page.locator(f"#{tab}:not([hidden])").wait_for()
            if tab == "reports":
                page.locator(f"li[data-report='{seeded.overdue}'] form").wait_for()
            if tab == "blocklist":
                page.locator("#blocklist-table tbody tr").first.wait_for()
            no_horizontal_overflow(page)
            shoot(page, f"phone-{tab}", shots)

        # -- sign out: the key is forgotten ---------------------------------------------------
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("status").filter(has_text="Signed out").wait_for()
        assert page.evaluate("sessionStorage.length") == 0
        assert page.locator("#report-list > li").count() == 0
        assert page.locator("#signin").is_visible()
    finally:
        api.close()
        with capsys.disabled():
            for path in shots:
                print(f"\nscreenshot: {path}", end="")
            print()

    v1 = [(u, a) for u, a in seen if "/v1/" in u]
    assert v1 and all(a is not None and a.startswith("Bearer gk_") for _, a in v1)
    assert not [u for u, _ in seen if keys.admin in u or keys.studio in u]
    assert all(u.startswith(server.url) or u.startswith("blob:") for u, _ in seen), seen
    assert problems == []
