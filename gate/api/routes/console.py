"""The operator console (``/console``): a static page and its assets, nothing else.

The page is public static content; everything it shows comes from the JSON API
(``/v1/reports``, ``/v1/trace``, ``/v1/blocklist``, ``/v1/audit``), called by the page
with the operator's ``admin`` API key, which the page keeps in ``sessionStorage`` only
(never in a URL or a cookie). This module serves files from a fixed allow-list with the
same security headers as the consent portal: a strict CSP (no inline script or style,
no other origin), no framing, no referrer, no caching.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
#: The only files served, with their media types (never guessed from the file system).
CONSOLE_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/")
async def console_index() -> Response:
    return await console_file("index.html")


@router.get("/console/{name}")
async def console_file(name: str) -> Response:
    """One file of the allow-list; anything else (``..``, other names) is a 404."""
    media_type = CONSOLE_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such page")
    return _secure(FileResponse(CONSOLE_DIR / name, media_type=media_type))
