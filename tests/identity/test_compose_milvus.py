"""docker/compose.yml's optional `milvus` profile, checked without a Docker engine:
Milvus standalone with its etcd and MinIO, pinned images, healthchecks, private ports,
and sidecars wired with GATE_INDEX=milvus and GATE_MILVUS_URI."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker" / "compose.yml"
MILVUS_PART = {"milvus-etcd", "milvus-minio", "milvus"}
MILVUS_SIDECARS = {"sidecar-milvus-1", "sidecar-milvus-2"}


def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    found: dict[str, Any] = data["services"]
    return found


def test_the_milvus_services_exist_only_in_the_milvus_profile() -> None:
    svc = services()
    assert set(svc) >= MILVUS_PART | MILVUS_SIDECARS
    for name in MILVUS_PART | MILVUS_SIDECARS:
        assert svc[name]["profiles"] == ["milvus"], name
    for name in ("postgres", "migrate", "sidecar-1", "sidecar-2"):
        assert "profiles" not in svc[name], f"{name} must start without a profile"


def test_images_are_pinned_and_every_server_has_a_healthcheck() -> None:
    svc = services()
    pins = {"milvus": r"milvusdb/milvus:v\d+\.\d+\.\d+",
            "milvus-etcd": r"quay\.io/coreos/etcd:v\d+\.\d+\.\d+",
            "milvus-minio": r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ"}
    for name, pattern in pins.items():
        assert re.fullmatch(pattern, svc[name]["image"]), svc[name]["image"]
        test = svc[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name
    assert "9091/healthz" in " ".join(svc["milvus"]["healthcheck"]["test"])
    assert ":latest" not in COMPOSE.read_text(encoding="utf-8")


def test_milvus_waits_for_its_dependencies_and_publishes_no_port() -> None:
    svc = services()
    milvus = svc["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    for dep in ("milvus-etcd", "milvus-minio"):
        assert milvus["depends_on"][dep]["condition"] == "service_healthy"
    env = milvus["environment"]
    assert env["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert env["MINIO_ADDRESS"] == "milvus-minio:9000"
    # The same credentials on both sides, from the environment.
    minio_env = svc["milvus-minio"]["environment"]
    assert env["MINIO_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert env["MINIO_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    for name in MILVUS_PART:
        assert "ports" not in svc[name], f"{name} must stay on the private network"
        assert svc[name]["volumes"], f"{name} needs a volume for its data"


def test_the_milvus_sidecars_are_wired_to_milvus() -> None:
    svc = services()
    for name in MILVUS_SIDECARS:
        side = svc[name]
        env = side["environment"]
        assert env["GATE_INDEX"] == "milvus"
        assert env["GATE_MILVUS_URI"] == "http://milvus:19530"
        assert env["GATE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert side["command"] == ["gate", "serve", "--host", "0.0.0.0", "--port", "8080"]
        assert side["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert side["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert all(p.startswith("127.0.0.1:") for p in side["ports"])
        assert any(v.endswith(":/var/lib/gate/keys") for v in side["volumes"])
        assert side["cap_drop"] == ["ALL"]
    assert svc["sidecar-milvus-2"]["depends_on"]["sidecar-milvus-1"]["condition"] == \
        "service_healthy"
    ports = [p for s in svc.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports)), "two services publish the same port"
