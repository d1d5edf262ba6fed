"""The README's SDK quick start as a program: runs it on real photos and checks each
outcome exactly. Used in-process (tests/real/test_readme.py) and in a fresh virtualenv
with nothing but ``pip install consent-gate`` (tests/packaging/test_fresh_install.py):

    python tests/readme_example.py README.md FACES_DIR WORK_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

#: Fixed photos of ../shared/faces/natural_small (chosen once, never by trying: Ada's probe
#: scores 0.66 and Bob's 0.90 against their three enrolment photos).
ADA = ("elton_john", [
    "httpimagesmtvcomurimgidfiledocrootvhcomsitewideflipbooksimgdailyjpgenlargefalse"
    "mattetruematteColorblackquality.jpg",
    "httpwwweonlinecomresizewwweonlinecomeolimagesEntireSitersxEltonJohnJRjpg.jpg",
    "httpwwwdeadlinecomvimgnetwpcontentuploadseltonjpg.jpg"], "ej.jpg")
BOB = ("mindy_kaling", [
    "httpwwwadweekcomfilesimagecachenodeinlinemindykalingprofilehedjpg.jpg",
    "httpwwwpictureszimbiocomfpMindyKalingfBgaONVFDFmjpg.jpg",
    "httpgonetworthcomwpcontentuploadsthumbsjpg.jpg"],
    "httpsamazonawscomkidzworldphotoimagesbccdddaaadgallerymindykalinggalleryjpg.jpg")
STRANGER = ("biden", "biden.jpg")
#: What the README promises for each photo checked.
EXPECTED = {"bob": ("allow", "consented", "allow.consented"),
            "ada": ("deny", "protected", "core.protected_subject"),
            "stranger": ("needs_consent", "unknown", None)}


def sdk_block(readme: str) -> str:
    section = readme.split("## SDK quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under the SDK quick start"
    return match.group(1)


def _read(faces: Path, person: str, name: str) -> bytes:
    return (faces / "natural_small" / person / name).read_bytes()


def run(readme: Path, faces: Path, work: Path, cases: tuple[str, ...] = tuple(EXPECTED)
        ) -> dict[str, Any]:
    """Run the README block once per checked photo, each in its own data dir."""
    import os

    code = compile(sdk_block(readme.read_text(encoding="utf-8")), "README.md", "exec")
    probes = {"bob": _read(faces, BOB[0], BOB[2]), "ada": _read(faces, ADA[0], ADA[2]),
              "stranger": _read(faces, *STRANGER)}
    out: dict[str, Any] = {}
    for case in cases:
        folder = work / case
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        namespace: dict[str, Any] = {
            "ada_photos": [_read(faces, ADA[0], n) for n in ADA[1]],
            "bob_photos": [_read(faces, BOB[0], n) for n in BOB[1]],
            "photo_jpeg": probes[case]}
        exec(code, namespace)
        d = namespace["d"]
        verdict, identity, rule = EXPECTED[case]
        assert d.verdict == verdict, (case, d.verdict, d.rule_ids)
        assert d.faces[0].identity == identity, (case, d.faces[0].identity)
        if rule is not None:
            assert rule in d.rule_ids, (case, d.rule_ids)
        out[case] = d.verdict
    return out


if __name__ == "__main__":
    results = run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    print("README example OK:", results)
