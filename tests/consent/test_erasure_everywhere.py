"""Erasure through every door leaves nothing of the person, at once (issue 14, defect 1).

A person with everything the gate can hold about them (templates, a grant with a signed
token, a consent request, a portal link and session, the decisions that used their grant,
their last-seen time, an app's self-enrolment, an attempt on their face, a notification
about it, a takedown report naming them) is erased through the SDK, the CLI,
``DELETE /v1/subjects/{id}`` or the portal's erase button. Then every table is scanned:
no row names the subject or holds their template, only the audit log keeps keyed
references, the index no longer finds them, and their grant token is listed as revoked.
On SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gate import db
from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.api.conftest import make_client
from tests.conftest import noise_png
from tests.consent.conftest import TEST_CONFIG, link_token, portal_headers
from tests.e2e.postgres import pg_url_factory  # noqa: F401  (fixture)

FACE = noise_png(81)


@dataclass
class Person:
    gate: FaceGate
    svc: ConsentService
    subject_id: str
    ref: str
    grant_id: str
    portal_token: str


def _open(tmp_path: Path, database_url: str = "") -> FaceGate:
    return FaceGate.open(tmp_path / "data", detector="fake", embedder="fake",
                         match_threshold=0.9, database_url=database_url,
                         analysis_cache_items=16)


def _person(gate: FaceGate) -> Person:
    """Everything the gate can keep about one person."""
    svc = ConsentService(gate, ConsentConfig(**TEST_CONFIG))
    subject = gate.enroll([FACE], display_name="Erin Example", status="consenting",
                          owner=Requester(app_id="studio", user_id="erin-user-7f3"),
                          aliases=["Erin"])
    sid = subject.subject_id
    grant = gate.grant(sid, app_id="studio", operations=["face_swap"], max_uses=5)
    assert grant.token is not None
    swap = GateRequest(operation="face_swap", requester=Requester(app_id="studio"),
                       images=[ImageInput(role="target", data=FACE)])
    assert gate.check(swap).verdict == "allow"  # a decision that used the grant
    request, _ = svc.requests.create("studio", image=FACE, operation="img2img")
    assert request.subject_id == sid
    svc.portal.open_link(link_token(svc.portal.link(sid)))  # a portal session
    portal_token = link_token(svc.portal.link(sid))  # and an unused link
    svc.activity.catch_up()  # last-seen and grant-use rows
    with svc.engine.begin() as conn:  # an app's self-enrolment that produced the subject
        from gate.clock import utcnow
        from gate.consent import tables as t

        conn.execute(t.self_enrolments.insert().values(
            enrolment_id="senr_1", app_id="studio", user_id="erin-user-7f3",
            state="enrolled",
            subject_id=sid, created_at=utcnow(), expires_at=utcnow()))
        from gate.incident import tables as it

        conn.execute(it.notifications.insert().values(  # a notification about an attempt
            notification_id="ntf_1", subject_id=sid, body=f'{{"subject_id": "{sid}"}}',
            state="dead", tries=8, next_at=utcnow(), created_at=utcnow()))
    other_app = GateRequest(operation="img2img", requester=Requester(app_id="elsewhere"),
                            images=[ImageInput(role="init", data=FACE)])
    assert gate.check(other_app).verdict in ("needs_consent", "deny")  # an attempt
    gate.report(pdq="ab" * 32, reason="impersonation", subject_id=sid,
                contact="erin@example.org")  # a takedown report naming them
    return Person(gate, svc, sid, gate.lifecycle.ref(sid), grant.grant_id, portal_token)


def _rows_naming(person: Person) -> dict[str, list[str]]:
    """Every row of every table that names the person (or holds their template)."""
    found: dict[str, list[str]] = {}
    needles = (person.subject_id, person.ref, "Erin Example", "erin-user-7f3",
               "erin@example.org")
    with person.svc.engine.connect() as conn:
        for name, table in db.metadata.tables.items():
            for row in conn.execute(select(table)).all():
                text = " ".join(str(v) for v in row)
                hits = [n for n in needles if n in text]
                if hits and not (name == "audit_events" and hits == [person.ref]):
                    found.setdefault(name, []).append(",".join(hits))
            if name == "templates":
                count = len(conn.execute(select(table)).all())
                if count:
                    found.setdefault(name, []).append(f"{count} templates")
    return found


def _assert_erased(person: Person) -> None:
    assert _rows_naming(person) == {}
    gate = person.gate
    face = gate.faces.largest_face(FACE)
    assert face is not None
    hits = gate.follower.search(face.vector[None, :].astype(np.float32), 3)
    assert all(h.subject_id != person.subject_id for h in hits[0])
    assert gate.faces.cached_items == 0
    d = gate.check(GateRequest(operation="face_swap", requester=Requester(app_id="studio"),
                               images=[ImageInput(role="target", data=FACE)]))
    assert d.faces[0].identity == "unknown" and d.faces[0].subject_id is None
    feed = person.svc.revocations("studio")
    assert {"grant_id": person.grant_id, "reason": "erased"}.items() <= feed.revoked[0].items()


def _by_sdk(person: Person, _: Path) -> None:
    person.gate.erase(person.subject_id)


def _by_cli(person: Person, tmp_path: Path) -> None:
    from gate.cli import app

    env = {"GATE_DETECTOR": "fake", "GATE_EMBEDDER": "fake", "GATE_MATCH_THRESHOLD": "0.9",
           "GATE_DATABASE_URL": person.gate.settings.database_url}
    r = CliRunner().invoke(app, ["erase", person.subject_id, "--data-dir",
                                 str(tmp_path / "data")], env=env)
    assert r.exit_code == 0, r.output
    person.gate.sync()  # this process learns of the erasure from the change feed


def _by_http(person: Person, _: Path) -> None:
    from gate.api.keys import KeyStore

    token = KeyStore(person.svc.engine).create("ops", ["admin"]).token
    with make_client(person.gate) as client:
        r = client.delete(f"/v1/subjects/{person.subject_id}",
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 204, r.text


def _by_portal(person: Person, _: Path) -> None:
    with make_client(person.gate) as client:
        r = client.post("/portal/api/session", json={"token": person.portal_token},
                        headers=portal_headers())
        assert r.status_code == 200, r.text
        r = client.post("/portal/api/erase", headers=portal_headers(r.json()["csrf"]))
        assert r.status_code == 200, r.text


DOORS: dict[str, Callable[[Person, Path], None]] = {
    "sdk": _by_sdk, "cli": _by_cli, "http": _by_http, "portal": _by_portal}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
    else:
        request.applymarker(pytest.mark.postgres)
        yield request.getfixturevalue("pg_url_factory")()


@pytest.mark.parametrize("door", sorted(DOORS))
def test_erasure_leaves_no_row_naming_the_person(tmp_path: Path, door: str,
                                                 database: str) -> None:
    gate = _open(tmp_path, database)
    try:
        person = _person(gate)
        assert set(_rows_naming(person)) >= {
            "subjects", "templates", "grants", "consent_requests", "consent_links",
            "consent_sessions", "consent_activity", "self_enrolments", "attempts",
            "reports", "notifications"}
        DOORS[door](person, tmp_path)
        _assert_erased(person)
        person.svc.close()
    finally:
        gate.close()


def test_a_new_table_about_people_must_register_an_erasure_hook() -> None:
    """Every table with a column that can name a subject is covered by a hook (or is the
    store's own, or the audit log's keyed references)."""
    from gate.consent.hooks import ERASURE_HOOKS

    covered = {"subjects", "templates", "grants", "changes",  # the store itself
               "audit_events",  # keyed references only, the chain must verify
               "consent_sessions", "consent_links",  # links.forget
               "consent_requests",  # requests.forget
               "consent_activity", "consent_grant_uses",  # retention.forget
               "self_enrolments",  # portal.forget
               "attempts", "reports", "notifications"}  # gate.incident: attempts, reports,
    #                                                          notify .forget
    people_columns = {"subject_id", "target", "verified_subject_id", "subject_ref",
                      "user_id", "owner_user", "display_name"}
    naming = {name for name, table in db.metadata.tables.items()
              if people_columns & set(table.columns.keys())}
    assert naming <= covered, f"tables about people without an erasure hook: " \
                              f"{sorted(naming - covered)}"
    assert len(ERASURE_HOOKS) == 7

