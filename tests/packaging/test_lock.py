"""The lock files pin what pyproject.toml asks for: every requirement of the package (and
of each extra a lock installs) is satisfied by a pinned version, and each lock pins every
package exactly once. ``make lock`` regenerates them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

LOCKS = {"dev.txt": ["dev", "server", "video", "nudity", "insightface", "c2pa", "demo"],
         "run.txt": ["server", "video", "demo"], "server.txt": ["server", "video", "milvus"]}


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if match:
            name = canonicalize_name(match.group(1).split("[")[0])
            assert name not in pins, f"{lock.name} pins {name} twice"
            pins[name] = match.group(2)
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_satisfies_pyproject(lock: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins(REPO / "requirements" / lock)
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in LOCKS[lock]:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    for req in wanted:
        name = canonicalize_name(req.name)
        if name == "consent-gate":
            continue  # the extras it names are listed above
        assert name in pins, f"{lock} does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{lock} pins {req.name}=={pins[name]}, outside {req.specifier}"
