"""Issue 15, done-when, through the public SDK and CLI, on real photos and real models.

- a labelled output, re-encoded, resized and cropped, is traced back to its request;
- unmarked photos give ``found: false``;
- a reported image re-used as an input (resized, re-encoded) is denied by
  ``core.known_image``, while another photo of the same person is not;
- the report shows its deadline and the trace; ``gate report list --overdue`` finds it
  once its deadline has passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.engine import FaceGate
from gate.types import GateRequest, Requester

pytestmark = pytest.mark.real
STUDIO = Requester(app_id="studio", user_id="u-17")


def _encode(image: np.ndarray, ext: str = ".png", quality: int = 95) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, image, params)
    assert ok
    return buf.tobytes()


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _crop(image: np.ndarray, fraction: float) -> np.ndarray:
    h, w = image.shape[:2]
    dy, dx = int(h * fraction), int(w * fraction)
    return image[dy:h - dy, dx:w - dx]


#: What a re-posted image goes through (each alone, and combined).
TRANSFORMS: dict[str, Callable[[np.ndarray], bytes]] = {
    "jpeg_q50": lambda im: _encode(im, ".jpg", 50),
    "jpeg_q75": lambda im: _encode(im, ".jpg", 75),
    "resize_50": lambda im: _encode(cv2.resize(im, None, fx=0.5, fy=0.5,
                                               interpolation=cv2.INTER_AREA)),
    "crop_10": lambda im: _encode(_crop(im, 0.10)),
    "brighter_20": lambda im: _encode(cv2.convertScaleAbs(im, alpha=1.0, beta=20)),
    "crop_resize_jpeg": lambda im: _encode(cv2.resize(_crop(im, 0.08), None, fx=0.6, fy=0.6,
                                                      interpolation=cv2.INTER_AREA),
                                           ".jpg", 70),
}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceGate]:
    g = FaceGate.open(tmp_path_factory.mktemp("incident") / "data")
    yield g
    g.close()


def _generated(photo: Path, width: int = 896) -> bytes:
    """A real photo standing in for a generated output (a person, at output size)."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    assert image is not None
    height = round(image.shape[0] * width / image.shape[1])
    return _encode(cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC))


def _allowed_output(gate: FaceGate, output: bytes) -> str:
    decision = gate.check(GateRequest(operation="txt2img", prompt="a portrait in a garden",
                                      requester=STUDIO))
    assert decision.verdict == "allow"
    screened = gate.check_output(output, request_id=decision.request_id, requester=STUDIO)
    assert screened.verdict == "allow", screened.reasons
    return decision.request_id


def test_labelled_outputs_are_traced_after_transforms(gate: FaceGate,
                                                      photos: list[Path]) -> None:
    people = sorted({p.parent for p in photos})
    traced, total = 0, 0
    for folder in people[:2]:
        output = _generated(sorted(folder.glob("*.jpg"))[0])
        request_id = _allowed_output(gate, output)
        labelled = gate.label_output(output, request_id=request_id)
        assert isinstance(labelled, bytes) and labelled != output
        exact = gate.trace(labelled)
        assert exact.found and exact.request_id == request_id and exact.record is not None
        assert exact.record.chain_verified and exact.record.app_id == "studio"
        assert exact.record.user_ref and "u-17" not in exact.record.user_ref
        for transform in TRANSFORMS.values():
            found = gate.trace(transform(_decode(labelled)))
            total += 1
            traced += found.found and found.request_id == request_id
            assert not found.found or found.request_id == request_id  # never another one
    assert traced / total >= 0.95, f"{traced}/{total}"


def test_unmarked_photos_are_never_attributed(gate: FaceGate, photos: list[Path]) -> None:
    output = _generated(photos[0])
    gate.label_output(output, request_id=_allowed_output(gate, output))  # marks exist
    for photo in photos[1::5][:6]:
        found = gate.trace(photo.read_bytes())
        assert not found.found and found.request_id is None and found.record is None


def test_reported_image_is_denied_as_input_but_other_photos_are_not(
        gate: FaceGate, photos: list[Path]) -> None:
    folder = max(sorted({p.parent for p in photos}), key=lambda f: len(list(f.glob("*.jpg"))))
    own = sorted(folder.glob("*.jpg"))
    assert len(own) >= 3
    output = _generated(own[0])
    request_id = _allowed_output(gate, output)
    leaked = gate.label_output(output, request_id=request_id)
    report = gate.report(image=leaked, reason="ncii")
    assert report.status == "open" and report.hashes >= 1
    assert (report.deadline - report.created_at).total_seconds() == 48 * 3600
    assert report.trace is not None and report.trace.found
    assert report.trace.request_id == request_id

    reused = _encode(cv2.resize(_decode(leaked), None, fx=0.7, fy=0.7,
                                interpolation=cv2.INTER_AREA), ".jpg", 80)
    denied = gate.check(GateRequest.model_validate({
        "operation": "img2img", "prompt": "make it sunny", "requester": STUDIO,
        "images": [{"role": "init", "data": reused}]}))
    assert denied.verdict == "deny" and "core.known_image" in denied.rule_ids
    screened = gate.check_output(reused, request_id=request_id, requester=STUDIO)
    assert screened.verdict == "deny" and "core.known_image" in screened.rule_ids
    for other in own[1:3]:
        decision = gate.check(GateRequest.model_validate({
            "operation": "img2img", "prompt": "make it sunny", "requester": STUDIO,
            "images": [{"role": "init", "data": other.read_bytes()}]}))
        assert "core.known_image" not in decision.rule_ids, other.name


def test_cli_trace_report_and_overdue(tmp_path: Path, photos: list[Path]) -> None:
    env = {**os.environ, "GATE_DATA_DIR": str(tmp_path / "data")}

    def gate_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gate.cli", *args], env=env,
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    output = _generated(photos[2])
    with FaceGate.open(tmp_path / "data") as g:
        request_id = _allowed_output(g, output)
        (tmp_path / "leak.png").write_bytes(g.label_output(output, request_id=request_id))
    traced = gate_cli("trace", "leak.png", "--json")
    assert traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout)["request_id"] == request_id
    (tmp_path / "plain.jpg").write_bytes(photos[3].read_bytes())
    plain = gate_cli("trace", "plain.jpg", "--json")
    assert json.loads(plain.stdout)["found"] is False

    filed = gate_cli("report", "leak.png", "--reason", "ncii", "--json")
    assert filed.returncode == 0, filed.stderr
    report = json.loads(filed.stdout)
    assert report["deadline"] and report["trace"]["request_id"] == request_id
    listed = gate_cli("report", "list", "--overdue", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []

    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "gate.db")
    db.execute("UPDATE reports SET deadline = '2020-01-01 00:00:00.000000'")
    db.commit()
    db.close()
    late = gate_cli("report", "list", "--overdue", "--json")
    assert late.returncode == 1
    assert [r["report_id"] for r in json.loads(late.stdout)] == [report["report_id"]]
    bad = gate_cli("report", "missing.png", "--reason", "ncii")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    wrong = gate_cli("report", "leak.png", "--reason", "spite", "--json")
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["error"]["code"] == \
        "invalid_request"


def test_readme_incident_example_runs(gate: FaceGate, photos: list[Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Docs are code: the README's incident-response block, as written."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Incident response", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match
    output = _generated(photos[4])
    request_id = _allowed_output(gate, output)
    decision = gate.check(GateRequest(operation="txt2img", prompt="a portrait",
                                      requester=STUDIO, request_id=request_id + "b"))
    gate.check_output(output, request_id=decision.request_id, requester=STUDIO)
    exec(compile(match.group(1), "README.md", "exec"),
         {"gate": gate, "decision": decision, "output": output})
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == "studio allow True"
    assert printed[1].startswith("rpt_") and " open " in printed[1]
