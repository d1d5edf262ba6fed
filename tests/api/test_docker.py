"""The Docker files, without a Docker engine: a hadolint-style lint of the Dockerfile,
the compose file's structure, and the commands the docs tell people to run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yml"
SERVE = ["gate", "serve", "--host", "0.0.0.0", "--port", "8080"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def only(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"expected exactly one {name}, found {len(found)}"
    return found[0]


def exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def test_lint_base_image_is_pinned_slim_python_311() -> None:
    base = only("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert ":latest" not in DOCKERFILE.read_text()


def test_lint_run_commands() -> None:
    runs = [args for word, args in instructions() if word == "RUN"]
    for run in runs:
        words = shlex.split(run)
        assert "sudo" not in words, run
        if "pip" in words and "install" in words:
            assert "--no-cache-dir" in words, run
        if "apt-get" in words and "install" in words:
            assert "--no-install-recommends" in words and "-y" in words, run
        assert "curl" not in words and "wget" not in words, run  # no downloads at build
    assert any("gate models verify" in r for r in runs), "weights not verified at build"


def test_lint_user_expose_healthcheck_cmd() -> None:
    user = only("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    names = [w for w, _ in instructions()]
    assert names.index("USER") < names.index("CMD")
    assert only("EXPOSE") == "8080"
    health = only("HEALTHCHECK")
    assert "/readyz" in health and "urllib.request" in health and "curl" not in health
    assert exec_form(only("CMD")) == SERVE
    assert "ADD" not in names  # COPY only


def test_healthcheck_command_is_valid_python() -> None:
    health = only("HEALTHCHECK")
    cmd = exec_form(health[health.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"]
    compile(cmd[2], "<healthcheck>", "exec")


def compose() -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_structure() -> None:
    services = compose()["services"]
    assert {"postgres", "migrate", "sidecar-1", "sidecar-2"} <= set(services)
    assert services["migrate"]["command"] == ["gate", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("migrate", "sidecar-1", "sidecar-2"):
        env = services[name]["environment"]
        assert env["GATE_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert any(v.endswith(":/var/lib/gate/keys") for v in services[name]["volumes"])
    for name in ("sidecar-1", "sidecar-2"):
        svc = services[name]
        assert svc["command"] == SERVE
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    assert services["sidecar-2"]["depends_on"]["sidecar-1"]["condition"] == "service_healthy"
    assert services["postgres"]["image"].startswith("postgres:")
    assert ":latest" not in COMPOSE.read_text()


def test_compose_config_when_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        check=False).returncode != 0:
        pytest.skip("docker compose plugin not installed (structure checked above)")
    r = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("doc", ["docs/scaling.md", "README.md"])
def test_docs_name_the_same_commands(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    if doc == "README.md" and "## Sidecar" not in text:
        pytest.skip("README has no Sidecar section yet")
    assert "docker compose -f docker/compose.yml up" in text
    assert "gate serve" in text and "/readyz" in text
    assert "gate keys create" in text and "gate db upgrade" in text
    for path in re.findall(r"docker/[\w.]+", text):
        assert (REPO / path).exists(), path


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    copied = [args.split()[:-1] for word, args in instructions() if word == "COPY"]
    for sources in copied:
        for src in sources:
            assert f"!{src}" in ignore or f"!{src}/**" in ignore, src
