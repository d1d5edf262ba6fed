"""The subject portal in headless Chromium (Debian's ``chromium``, driven by Playwright):
open the one-time link, see the grant, revoke it with a click; a check that was allowed
now needs consent. Screenshots go to $GATE_SCREENSHOT_DIR (default /tmp)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import REPO, noise_png
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("GATE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("GATE_SCREENSHOT_DIR", "/tmp"))
ALICE = noise_png(71)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def swap() -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=ALICE)],
                       requester=Requester(app_id="studio", user_id="u1"))


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1100, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    FaceGate.open(data, detector="fake", embedder="fake").close()
    port = free_port()
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.consent.sidecar", str(data),
                             str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/portal/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, data
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_portal_revoke_in_chromium(browser_context: object, sidecar: tuple[str, Path]) -> None:
    url, data = sidecar
    gate = FaceGate.open(data, detector="fake", embedder="fake", match_threshold=0.9)
    svc = ConsentService(gate, ConsentConfig(secure_cookies=False, public_url=url))
    try:
        sid = gate.enroll([ALICE], "Alice Example", status="consenting").subject_id
        grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap", "edit"],
                          purpose="poster", max_uses=5)
        svc.lifecycle.grant(sid, app_id="sketchbook", operations=["img2img"], user_id="u9")
        assert gate.check(swap().model_copy(update={"purpose": "poster"})).verdict == "allow"

        page = browser_context.new_page()  # type: ignore[attr-defined]
        page.goto(svc.portal.link(sid))
        row = page.locator(f"tr[data-grant-row='{grant.grant_id}']")
        row.wait_for()
        assert "#t=" not in page.url  # the one-time token left the address bar
        assert "studio (any user)" in row.inner_text() and "1 of 5" in row.inner_text()
        assert page.locator("#uses tbody tr").count() == 1
        cookie = next(c for c in browser_context.cookies()  # type: ignore[attr-defined]
                      if c["name"] == "gate_portal")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.screenshot(path=str(SHOTS / "consent-portal-before.png"), full_page=True)

        button = page.get_by_role("button", name="Revoke permission for studio")
        button.focus()
        page.keyboard.press("Enter")  # keyboard works, not only the mouse
        page.get_by_role("status").filter(has_text="revoked").wait_for()
        page.locator(f"tr[data-grant-row='{grant.grant_id}'] >> text=Revoked").wait_for()
        page.screenshot(path=str(SHOTS / "consent-portal.png"), full_page=True)

        decision = gate.check(swap().model_copy(update={"purpose": "poster"}))
        assert decision.verdict == "needs_consent"
        assert gate.parts.store.get_grant(grant.grant_id).revoked_at is not None  # type: ignore[union-attr]

        page.get_by_role("button", name="Protect me: never allow any use of my face").click()
        page.get_by_text("Protected (no use of your face is allowed)").wait_for()
        assert gate.get_subject(sid).status == "protected"

        reopened = browser_context.new_page()  # type: ignore[attr-defined]
        reopened.goto(f"{url}/portal/")  # the session cookie still signs in
        reopened.locator(f"tr[data-grant-row='{grant.grant_id}']").wait_for()
        # a used link does not sign in again
        fresh = browser_context.new_page()  # type: ignore[attr-defined]
        link = svc.portal.link(sid)
        fresh.goto(link)
        fresh.locator("#signed-in:not([hidden])").wait_for()
        stale = browser_context.new_page()  # type: ignore[attr-defined]
        browser_context.clear_cookies()  # type: ignore[attr-defined]
        stale.goto(link)
        stale.get_by_role("status").filter(has_text="Sign-in failed").wait_for()
    finally:
        svc.close()
        gate.close()
