"""``gate demo``: a narrated scenario on real photos that ship with installed packages.

- scikit-image's ``astronaut.png`` (NASA portrait of Eileen Collins, public domain) plays
  "Ada", who enrols as protected;
- insightface's ``Tom_Hanks_54745.png`` plays "Bob", who consents to face swaps in "studio";
- scikit-image's ``camera.png`` ("cameraman") and insightface's ``t1.jpg`` (a group of six)
  are people who never enrolled.
Checks use new renditions of the photos (mirrored, rescaled, re-encoded, placed in a
larger scene), so a match is a recognition, not a byte comparison.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gate.engine import FaceGate
from gate.types import Decision, GateRequest, ImageInput, Requester


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


def demo_photos() -> dict[str, Path]:
    return {
        "ada": _package_file("skimage", "data", "astronaut.png"),
        "bob": _package_file("insightface", "data", "images", "Tom_Hanks_54745.png"),
        "stranger": _package_file("skimage", "data", "camera.png"),
        "group": _package_file("insightface", "data", "images", "t1.jpg"),
    }


def rendition(path: Path, *, mirror: bool = False, scale: float = 1.0,
              canvas: int | None = None, quality: int = 85) -> bytes:
    """A different photo of the same face: mirrored/rescaled/re-encoded/in a bigger scene."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    if mirror:
        image = image[:, ::-1]
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    if canvas is not None:
        h, w = image.shape[:2]
        scene = np.full((max(canvas, h), max(canvas, w), 3), (90, 120, 150), np.uint8)
        y, x = (scene.shape[0] - h) // 3, (scene.shape[1] - w) // 2
        scene[y:y + h, x:x + w] = image
        image = scene
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode the demo image")
    return buf.tobytes()


def _show(console: Console, title: str, decision: Decision) -> None:
    colour = {"allow": "green", "needs_consent": "yellow", "deny": "red"}[decision.verdict]
    console.print(f"  -> [bold {colour}]{decision.verdict.upper()}[/]  "
                  f"({decision.latency_ms.get('total', 0):.0f} ms)")
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for col in ("face", "identity", "similarity", "rule that decided"):
        table.add_column(col)
    reasons = {r.face_ref: r.rule_id for r in decision.reasons}
    for face in decision.faces:
        sim = f"{face.similarity:.2f}" if face.similarity is not None else "-"
        table.add_row(face.face_ref, face.identity, sim, reasons.get(face.face_ref, "-"))
    for r in decision.reasons:
        if r.face_ref is None:
            table.add_row("-", "-", "-", r.rule_id)
    console.print(table)


def run_demo(data_dir: Path | None = None, console: Console | None = None) -> dict[str, str]:
    """Run the scenario; returns ``{step: verdict}`` (used by the tests)."""
    console = console or Console()
    photos = demo_photos()
    verdicts: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gate-demo-") as tmp:
        gate = FaceGate.open(data_dir or Path(tmp))
        try:
            verdicts = _scenario(gate, photos, console)
        finally:
            gate.close()
    return verdicts


def _scenario(gate: FaceGate, photos: dict[str, Path], console: Console) -> dict[str, str]:
    studio_user = Requester(app_id="studio", user_id="u1")
    out: dict[str, str] = {}

    def step(key: str, title: str, request: GateRequest) -> Decision:
        console.print(f"\n[bold]{title}[/]")
        decision = gate.check(request)
        _show(console, title, decision)
        out[key] = decision.verdict
        return decision

    console.rule("consent-gate demo")
    console.print("Ada enrols as [bold]protected[/] (\"never generate me\").")
    ada = gate.enroll(images=[photos["ada"].read_bytes()], display_name="Ada",
                      status="protected")
    console.print("Bob enrols as [bold]consenting[/] and grants app 'studio' face swaps.")
    bob = gate.enroll(images=[photos["bob"].read_bytes()], display_name="Bob",
                      status="consenting", owner=Requester(app_id="studio", user_id="bob-account"))
    grant = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap", "img2img"],
                       content=["general"])

    ada_photo = rendition(photos["ada"], mirror=True, canvas=900, quality=80)
    step("protected", "1. A user of 'studio' tries to face-swap a new photo of Ada.",
         GateRequest(operation="face_swap", images=[ImageInput(role="target", data=ada_photo)],
                     prompt="put her on a beach", requester=studio_user))
    step("nudify", "2. Someone uploads a stranger's photo to 'nudify' it (the 2024 case).",
         GateRequest(operation="nudify", images=[ImageInput(
             role="target", data=rendition(photos["stranger"], quality=90))],
             prompt="remove clothes", requester=studio_user))
    bob_photo = rendition(photos["bob"], mirror=True, scale=2.5, canvas=480, quality=85)
    swap = GateRequest(operation="face_swap", images=[ImageInput(role="target", data=bob_photo)],
                       prompt="put him on a beach", requester=studio_user)
    step("consented", "3. 'studio' face-swaps Bob, who granted exactly that.", swap)
    step("group", "4. 'studio' face-swaps a group photo of six people nobody enrolled.",
         GateRequest(operation="face_swap", images=[ImageInput(
             role="target", data=photos["group"].read_bytes())], requester=studio_user))
    console.print(f"\nBob revokes grant {grant.grant_id}.")
    gate.revoke(grant.grant_id)
    step("revoked", "5. The same swap of Bob, after his revocation.", swap)
    console.print("\nAda asks to be erased.")
    gate.erase(ada.subject_id)
    step("erased", "6. Ada's photo again: she is now simply an unknown face.",
         GateRequest(operation="face_swap", images=[ImageInput(role="target", data=ada_photo)],
                     requester=studio_user))
    audit = gate.verify_audit()
    console.print(f"\nAudit chain: {'[green]verified[/]' if audit.ok else '[red]BROKEN[/]'} "
                  f"({audit.events} events, no pixels, no embeddings, no names).")
    return out
