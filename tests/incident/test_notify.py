"""Notifications about attempts on a person's face (``gate.incident.notify``).

Real HTTP (a local ``http.server`` receiver, no mocks of httpx), real SQLite and real
PostgreSQL, injected clocks (no sleeping for backoff).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from gate import db
from gate.clock import utcnow
from gate.consent.offline import TokenInvalid, verify_grant_token
from gate.consent.store import Person
from gate.consent.tokens import SigningKeyring
from gate.db.migrate import ensure_schema
from gate.errors import GateError, InvalidRequest, NotFound
from gate.incident import notify
from gate.incident import tables as t
from gate.incident.attempts import Attempts
from gate.incident.notify import (
    NOTIFICATION_AUDIENCE,
    SIGNATURE_HEADER,
    DeliveryReport,
    NotificationInvalid,
    Notifier,
    verify_notification,
)
from gate.types import Decision, FaceResult, Reason
from tests.e2e.postgres import pg_url, pg_url_factory  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a window start (3600 s, epoch-aligned)
HOUR = timedelta(hours=1)


# -- a real receiver ---------------------------------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    #: statuses to answer, in order; 200 once empty
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        done = threading.Event()
        deadline = threading.Timer(timeout_s, done.set)
        deadline.start()
        try:
            while len(self.received) < count and not done.wait(0.02):
                pass
        finally:
            deadline.cancel()
        return len(self.received) >= count


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            recv = box[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            recv.received.append(Received(dict(self.headers.items()), body))
            status = recv.statuses.pop(0) if recv.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", recv.url)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/attempts"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- database, keys, attempts ------------------------------------------------------------
def _schema(url: str) -> Engine:
    engine = db.make_engine(url)
    ensure_schema(engine)
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = _schema(f"sqlite:///{tmp_path / 'db' / 'gate.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def keyring(tmp_path: Path) -> SigningKeyring:
    return SigningKeyring(tmp_path / "keys" / "signing.jwk")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make_notifier(engine: Engine, keyring: SigningKeyring
                  ) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(url: str | None, **kwargs: Any) -> Notifier:
        kwargs.setdefault("clock", Clock(T0))
        notifier = Notifier(kwargs.pop("engine", engine), kwargs.pop("keyring", keyring),
                            url=url, **kwargs)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def _decision(*subjects: str, verdict: str = "deny", request_id: str = "req_0001") -> Decision:
    faces = [FaceResult(face_ref=f"i0f{i}", image_index=0, role="target", bbox=(0, 0, 90, 90),
                        det_score=0.99, quality=0.9, size_px=90, identity="protected",
                        subject_id=s, subject_status="protected", similarity=0.8)
             for i, s in enumerate(subjects)]
    return Decision.model_validate({
        "verdict": verdict, "request_id": request_id, "policy_version": "test",
        "reasons": [Reason(rule_id="core.protected_subject", effect="deny",
                           message="a protected person")], "faces": faces})


def _attempt(engine: Engine, *subjects: str, at: datetime, verdict: str = "deny",
             app_id: str = "studio", operation: str = "face_swap") -> None:
    Attempts(engine).record(_decision(*subjects, verdict=verdict), app_id=app_id,
                            operation=operation, at=at)


def _notifications(engine: Engine) -> list[Any]:
    n = t.notifications.c
    with engine.connect() as conn:
        return list(conn.execute(select(t.notifications).order_by(n.subject_id,
                                                                  n.created_at)).all())


def _unnotified(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(t.attempts.c.attempt_id)
                                .where(t.attempts.c.notified.is_(False))).all())


# -- aggregation -------------------------------------------------------------------------
def test_three_attempts_in_a_window_make_one_notification_with_count_3(
        engine: Engine, make_notifier: Callable[..., Notifier]) -> None:
    for minute in (5, 10, 20):
        _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=minute))
    notifier = make_notifier("http://127.0.0.1:9/unused")
    assert notifier.aggregate(T0 + HOUR) == 1
    [row] = _notifications(engine)
    body = json.loads(row.body)
    assert (row.subject_id, row.state, row.tries) == ("sub_alice", "pending", 0)
    assert body["type"] == "consent-gate.attempts"
    assert body["notification_id"] == row.notification_id
    assert body["subject_id"] == "sub_alice"
    assert body["count"] == 3
    assert body["window_start"] == T0.isoformat()
    assert body["window_end"] == (T0 + HOUR).isoformat()
    assert [a["at"] for a in body["attempts"]] == [
        (T0 + timedelta(minutes=m)).isoformat() for m in (5, 10, 20)]
    assert body["attempts"][0] == {"at": (T0 + timedelta(minutes=5)).isoformat(),
                                   "app_id": "studio", "operation": "face_swap",
                                   "verdict": "deny"}
    assert _unnotified(engine) == 0
    assert notifier.aggregate(T0 + 2 * HOUR) == 0  # marked: never twice
    assert notifier.aggregated == 1


def test_two_people_make_two_notifications(engine: Engine,
                                           make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", "sub_bob", at=T0 + timedelta(minutes=1))
    _attempt(engine, "sub_bob", at=T0 + timedelta(minutes=2), verdict="needs_consent")
    assert make_notifier("http://127.0.0.1:9/").aggregate(T0 + HOUR) == 2
    bodies = {r.subject_id: json.loads(r.body) for r in _notifications(engine)}
    assert {s: b["count"] for s, b in bodies.items()} == {"sub_alice": 1, "sub_bob": 2}
    assert [a["verdict"] for a in bodies["sub_bob"]["attempts"]] == ["deny", "needs_consent"]


def test_an_open_window_is_not_aggregated_yet(engine: Engine,
                                              make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    _attempt(engine, "sub_alice", at=T0 + HOUR + timedelta(minutes=5))  # the next window
    notifier = make_notifier("http://127.0.0.1:9/")
    assert notifier.aggregate(T0 + HOUR - timedelta(microseconds=1)) == 0
    assert _unnotified(engine) == 2
    assert notifier.aggregate(T0 + HOUR) == 1  # the first window closed, not the second
    assert _unnotified(engine) == 1
    assert notifier.aggregate(T0 + 2 * HOUR) == 1
    assert [json.loads(r.body)["window_start"] for r in _notifications(engine)] == [
        T0.isoformat(), (T0 + HOUR).isoformat()]


def test_windows_are_fixed_and_epoch_aligned(make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(None, window_s=900)
    start, end = notifier.window_of(T0 + timedelta(minutes=22, seconds=5))
    assert (start, end) == (T0 + timedelta(minutes=15), T0 + timedelta(minutes=30))
    assert int(start.timestamp()) % 900 == 0


def test_count_is_exact_and_the_list_is_capped(engine: Engine,
                                               make_notifier: Callable[..., Notifier]) -> None:
    for i in range(notify.MAX_LISTED + 10):
        _attempt(engine, "sub_alice", at=T0 + timedelta(seconds=30 * i))
    make_notifier("http://127.0.0.1:9/").aggregate(T0 + HOUR)
    [row] = _notifications(engine)
    body = json.loads(row.body)
    assert body["count"] == notify.MAX_LISTED + 10
    assert len(body["attempts"]) == notify.MAX_LISTED
    assert body["attempts"][0]["at"] == T0.isoformat()  # oldest first


def test_a_late_attempt_in_a_closed_window_is_notified_too(
        engine: Engine, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier("http://127.0.0.1:9/")
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    assert notifier.aggregate(T0 + HOUR) == 1
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=59))  # recorded late
    assert notifier.aggregate(T0 + HOUR + timedelta(seconds=1)) == 1
    assert [json.loads(r.body)["count"] for r in _notifications(engine)] == [1, 1]


def test_without_a_url_nothing_is_aggregated_or_sent(
        engine: Engine, make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(None)
    report = notifier.run_once(T0 + 5 * HOUR)
    assert report.aggregated == 0 and report.delivery == DeliveryReport(0, 0, 0)
    assert _notifications(engine) == []
    assert _unnotified(engine) == 1  # still listed in the portal
    assert [a.verdict for a in Attempts(engine).of("sub_alice")] == ["deny"]


@pytest.mark.parametrize(("kwargs", "field_name"), [
    ({"url": "ftp://example.org/x"}, "url"), ({"url": "example.org"}, "url"),
    ({"url": None, "window_s": 0}, "window_s"), ({"url": None, "max_tries": 0}, "max_tries"),
    ({"url": None, "timeout_s": 0}, "backoff_s")])
def test_bad_settings_are_clear_errors(engine: Engine, keyring: SigningKeyring,
                                       kwargs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        Notifier(engine, keyring, **kwargs)
    assert err.value.field == field_name


# -- delivery and signatures -------------------------------------------------------------
def test_delivered_notification_verifies_with_the_published_jwks(
        engine: Engine, keyring: SigningKeyring, receiver: Receiver,
        make_notifier: Callable[..., Notifier]) -> None:
    for minute in (5, 10, 20):
        _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=minute))
    notifier = make_notifier(receiver.url)
    report = notifier.run_once(T0 + HOUR)
    assert report.aggregated == 1
    assert report.delivery == DeliveryReport(sent=1, retried=0, dead=0)
    [got] = receiver.received
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Gate-Event"] == "consent-gate.attempts"
    [row] = _notifications(engine)
    assert row.state == "sent" and got.body == row.body.encode()  # the exact stored bytes
    notification = verify_notification(got.body, got.headers[SIGNATURE_HEADER],
                                       keyring.jwks())
    assert notification["count"] == 3 and notification["subject_id"] == "sub_alice"
    assert notifier.sent == 1 and notifier.failed == 0
    assert notifier.run_once(T0 + 2 * HOUR).delivery == DeliveryReport()  # sent once


def _delivered(engine: Engine, receiver: Receiver,
               make_notifier: Callable[..., Notifier]) -> tuple[bytes, str, Notifier]:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(receiver.url)
    notifier.run_once(T0 + HOUR)
    [got] = receiver.received
    return got.body, got.headers[SIGNATURE_HEADER], notifier


def test_signature_fails_on_a_tampered_body(engine: Engine, keyring: SigningKeyring,
                                            receiver: Receiver,
                                            make_notifier: Callable[..., Notifier]) -> None:
    body, signature, _ = _delivered(engine, receiver, make_notifier)
    tampered = body.replace(b'"count":1', b'"count":7')
    assert tampered != body
    with pytest.raises(NotificationInvalid, match="does not match"):
        verify_notification(tampered, signature, keyring.jwks())
    with pytest.raises(NotificationInvalid):
        verify_notification(body + b" ", signature, keyring.jwks())


def test_signature_fails_with_another_key(engine: Engine, tmp_path: Path,
                                          receiver: Receiver,
                                          make_notifier: Callable[..., Notifier]) -> None:
    body, signature, _ = _delivered(engine, receiver, make_notifier)
    other = SigningKeyring(tmp_path / "other" / "signing.jwk")
    with pytest.raises(NotificationInvalid, match="key the JWKS does not hold"):
        verify_notification(body, signature, other.jwks())
    # the other key's public part under this signature's kid: the signature fails
    kid = json.loads(base64.urlsafe_b64decode(signature.split(".")[0] + "=="))["kid"]
    forged = {"keys": [{**other.jwks()["keys"][0], "kid": kid}]}
    with pytest.raises(NotificationInvalid, match="does not verify"):
        verify_notification(body, signature, forged)


def test_a_grant_token_is_not_a_notification_signature_and_vice_versa(
        engine: Engine, keyring: SigningKeyring, receiver: Receiver,
        make_notifier: Callable[..., Notifier]) -> None:
    body, signature, _ = _delivered(engine, receiver, make_notifier)
    claims = json.loads(base64.urlsafe_b64decode(signature.split(".")[1] + "=="))
    # the same claims, signed by the same key as a grant token: refused
    grant_typed = keyring.sign(claims)
    with pytest.raises(NotificationInvalid, match="not a notification signature"):
        verify_notification(body, grant_typed, keyring.jwks())
    # and a grant-token verifier refuses a notification signature
    with pytest.raises(TokenInvalid):
        verify_grant_token(signature, jwks=keyring.jwks(), app_id=NOTIFICATION_AUDIENCE,
                           now=T0 + HOUR)
    assert isinstance(NotificationInvalid("x"), GateError)
    assert NotificationInvalid.code == "notification_invalid"


def test_signature_names_the_body_it_signs(engine: Engine, keyring: SigningKeyring,
                                           receiver: Receiver,
                                           make_notifier: Callable[..., Notifier]) -> None:
    body, _, notifier = _delivered(engine, receiver, make_notifier)
    other_id = notifier.sign("ntf_someone_else", body, T0 + HOUR)
    with pytest.raises(NotificationInvalid, match="not the notification that was signed"):
        verify_notification(body, other_id, keyring.jwks())
    not_json = b"not json"
    with pytest.raises(NotificationInvalid, match="not JSON"):
        verify_notification(not_json, notifier.sign("x", not_json), keyring.jwks())


@pytest.mark.parametrize("signature", ["", "a.b", "a.b.c", "x" * 9000, "é.é.é"])
def test_malformed_signatures_are_refused(keyring: SigningKeyring, signature: str) -> None:
    with pytest.raises(NotificationInvalid):
        verify_notification(b"{}", signature, keyring.jwks())


def test_max_age_refuses_old_signatures(engine: Engine, keyring: SigningKeyring,
                                        receiver: Receiver,
                                        make_notifier: Callable[..., Notifier]) -> None:
    body, signature, _ = _delivered(engine, receiver, make_notifier)
    assert verify_notification(body, signature, keyring.jwks(), max_age_s=300,
                               now=T0 + HOUR + timedelta(seconds=299))["count"] == 1
    with pytest.raises(NotificationInvalid, match="too old"):
        verify_notification(body, signature, keyring.jwks(), max_age_s=300,
                            now=T0 + HOUR + timedelta(seconds=301))


def test_signatures_follow_key_rotation(engine: Engine, keyring: SigningKeyring,
                                        receiver: Receiver,
                                        make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(receiver.url)
    old_jwks = keyring.jwks()
    new_kid = keyring.rotate()
    notifier.run_once(T0 + HOUR)
    [got] = receiver.received
    signature = got.headers[SIGNATURE_HEADER]
    assert json.loads(base64.urlsafe_b64decode(signature.split(".")[0] + "=="))["kid"] \
        == new_kid
    verify_notification(got.body, signature, keyring.jwks())
    with pytest.raises(NotificationInvalid):
        verify_notification(got.body, signature, old_jwks)


# -- retries, dead letters ---------------------------------------------------------------
def test_retries_with_backoff_when_the_receiver_answers_500_then_200(
        engine: Engine, keyring: SigningKeyring, receiver: Receiver,
        make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    receiver.statuses = [500, 200]
    notifier = make_notifier(receiver.url, backoff_s=60.0)
    first = T0 + HOUR
    assert notifier.run_once(first).delivery == DeliveryReport(sent=0, retried=1, dead=0)
    [row] = _notifications(engine)
    assert (row.state, row.tries, row.last_error) == ("pending", 1, "HTTP 500")
    assert db_time(row.next_at) == first + timedelta(seconds=60)
    assert notifier.deliver(first + timedelta(seconds=59)) == DeliveryReport()  # not due
    assert len(receiver.received) == 1
    assert notifier.deliver(first + timedelta(seconds=60)) == DeliveryReport(sent=1)
    [row] = _notifications(engine)
    assert (row.state, row.tries, row.last_error) == ("sent", 1, None)
    assert [r.body for r in receiver.received] == [row.body.encode()] * 2  # same bytes
    for got in receiver.received:  # each try signed afresh, each verifies
        verify_notification(got.body, got.headers[SIGNATURE_HEADER], keyring.jwks())
    assert (notifier.sent, notifier.failed, notifier.dead) == (1, 1, 0)


def db_time(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_backoff_doubles_then_a_dead_letter_after_max_tries(
        engine: Engine, receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    receiver.statuses = [503] * 3
    notifier = make_notifier(receiver.url, max_tries=3, backoff_s=10.0)
    now = T0 + HOUR
    notifier.aggregate(now)
    gaps = []
    for _ in range(2):
        assert notifier.deliver(now) == DeliveryReport(retried=1)
        due = notifier.get(_notifications(engine)[0].notification_id).next_at
        gaps.append((due - now).total_seconds())
        now = due
    assert gaps == [10.0, 20.0]
    assert notifier.deliver(now) == DeliveryReport(dead=1)
    [dead] = notifier.dead_letters()
    assert (dead.subject_id, dead.state, dead.tries, dead.last_error) == \
        ("sub_alice", "dead", 3, "HTTP 503")
    assert notifier.deliver(now + 10 * HOUR) == DeliveryReport()  # dead stays dead
    assert (notifier.sent, notifier.failed, notifier.dead) == (0, 3, 1)
    assert notifier.backlog() == {"pending": 0, "sent": 0, "dead": 1}
    # an operator re-queues it; the receiver is back
    notifier.retry_dead(dead.notification_id, now + 10 * HOUR)
    assert notifier.dead_letters() == []
    assert notifier.deliver(now + 10 * HOUR) == DeliveryReport(sent=1)
    assert notifier.get(dead.notification_id).state == "sent"
    with pytest.raises(NotFound):
        notifier.retry_dead(dead.notification_id)  # not dead any more
    with pytest.raises(NotFound):
        notifier.retry_dead("ntf_nope")


def test_backoff_is_capped(make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(None, backoff_s=60.0, max_backoff_s=600.0)
    assert [notifier.backoff_delay(n) for n in (1, 2, 3, 4, 5, 30)] == \
        [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]


def test_an_unreachable_receiver_records_the_fault_class_and_ends_the_round(
        engine: Engine, make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", "sub_bob", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(f"http://127.0.0.1:{_closed_port()}/hook", timeout_s=2.0)
    report = notifier.run_once(T0 + HOUR)
    assert report.aggregated == 2
    assert report.delivery == DeliveryReport(retried=1)  # the second one was not tried
    rows = _notifications(engine)
    assert sorted((r.tries, r.last_error) for r in rows) == [(0, None), (1, "ConnectError")]


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
        engine: Engine, receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    receiver.statuses = [302]
    notifier = make_notifier(receiver.url)
    assert notifier.run_once(T0 + HOUR).delivery == DeliveryReport(retried=1)
    assert len(receiver.received) == 1
    assert _notifications(engine)[0].last_error == "HTTP 302"


def test_a_claimed_notification_is_not_posted_twice(
        engine: Engine, receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    """Another process is posting it (its lease moved next_at on): this one skips it."""
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(receiver.url)
    notifier.aggregate(T0 + HOUR)
    [row] = _notifications(engine)
    assert notifier._claim(row.notification_id, T0 + HOUR)
    assert notifier.deliver(T0 + HOUR) == DeliveryReport()
    assert receiver.received == []


def test_the_background_thread_aggregates_and_delivers(
        engine: Engine, keyring: SigningKeyring, receiver: Receiver,
        make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier(receiver.url, clock=Clock(T0 + HOUR))
    assert notifier.start(interval_s=0.05) is notifier
    assert notifier.start(interval_s=0.05) is notifier  # idempotent
    assert receiver.wait_for(1)
    notifier.stop()
    assert notifier._thread is None
    got = receiver.received[0]
    verify_notification(got.body, got.headers[SIGNATURE_HEADER], keyring.jwks())
    assert notifier.sent == 1 and notifier.errors == 0
    with pytest.raises(InvalidRequest):
        notifier.start(interval_s=0)
    # stopped, it still works when called directly (a CLI or an operator's run)
    _attempt(engine, "sub_alice", at=T0 + 2 * HOUR)
    assert notifier.run_once(T0 + 3 * HOUR).delivery == DeliveryReport(sent=1)


# -- erasure, export, privacy ------------------------------------------------------------
def test_erasure_removes_every_notification_about_the_person(
        engine: Engine, receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    _attempt(engine, "sub_alice", "sub_bob", at=T0 + timedelta(minutes=5))
    _attempt(engine, "sub_alice", at=T0 + HOUR + timedelta(minutes=5))
    _attempt(engine, "sub_alice", at=T0 + 2 * HOUR + timedelta(minutes=5))
    notifier = make_notifier(receiver.url, max_tries=1)
    notifier.run_once(T0 + HOUR)  # alice's first: sent (bob's too)
    receiver.statuses = [500]
    notifier.run_once(T0 + 2 * HOUR)  # alice's second: dead
    notifier.aggregate(T0 + 3 * HOUR)  # alice's third: pending
    states = sorted(r.state for r in _notifications(engine) if r.subject_id == "sub_alice")
    assert states == ["dead", "pending", "sent"]
    alice = Person("sub_alice", "ref_alice", ())
    with engine.connect() as conn:
        exported = notify.export(conn, alice)["notifications"]
    assert sorted(e["state"] for e in exported) == ["dead", "pending", "sent"]
    assert {e["count"] for e in exported} == {1}
    with engine.begin() as conn:
        notify.forget(conn, alice)
    assert [r.subject_id for r in _notifications(engine)] == ["sub_bob"]
    with engine.connect() as conn:
        assert notify.export(conn, alice) == {"notifications": []}


def test_no_image_prompt_request_or_user_id_reaches_the_receiver(
        fake_gate: Any, tmp_path: Path, receiver: Receiver) -> None:
    """Through the real engine: a protected person's face is refused for a user with a
    prompt; the notification names only when, which app, which operation, what verdict."""
    from gate.types import GateRequest, ImageInput, Requester
    from tests.conftest import noise_png

    image = noise_png(41)
    subject = fake_gate.enroll([image], display_name="Pat Example", status="protected")
    decision = fake_gate.check(GateRequest(
        operation="face_swap", prompt="put Pat Example nude on a beach",
        images=[ImageInput(role="target", data=image)],
        requester=Requester(app_id="studio", user_id="user-7731-secret")))
    assert decision.verdict == "deny"
    keyring = SigningKeyring(tmp_path / "keys" / "signing.jwk")
    later = utcnow() + 2 * HOUR
    notifier = Notifier(fake_gate.incident.engine, keyring, url=receiver.url,
                        clock=Clock(later))
    try:
        assert notifier.run_once().delivery.sent == 1
    finally:
        notifier.close()
    [got] = receiver.received
    body = json.loads(got.body)
    assert set(body) == {"type", "notification_id", "subject_id", "window_start",
                         "window_end", "count", "attempts"}
    assert body["subject_id"] == subject.subject_id
    assert [set(a) for a in body["attempts"]] == [{"at", "app_id", "operation", "verdict"}]
    assert body["attempts"][0]["app_id"] == "studio"
    wire = got.body + json.dumps(got.headers).encode() + \
        base64.urlsafe_b64decode(got.headers[SIGNATURE_HEADER].split(".")[1] + "==")
    for secret in (b"user-7731-secret", b"nude", b"beach", b"Pat Example",
                   decision.request_id.encode(), image[:64], base64.b64encode(image)[:64]):
        assert secret not in wire


# -- PostgreSQL --------------------------------------------------------------------------
@pytest.mark.postgres
def test_aggregation_and_delivery_on_postgres(pg_url: str, keyring: SigningKeyring,  # noqa: F811
                                              receiver: Receiver) -> None:
    engine = _schema(pg_url)
    other = db.make_engine(pg_url)
    notifiers: list[Notifier] = []
    try:
        for minute in (5, 10, 20):
            _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=minute))
        _attempt(engine, "sub_bob", at=T0 + timedelta(minutes=30))
        _attempt(engine, "sub_alice", at=T0 + HOUR + timedelta(minutes=1))  # open window
        notifiers = [Notifier(e, keyring, url=receiver.url, clock=Clock(T0 + HOUR))
                     for e in (engine, other) for _ in range(2)]
        # four notifiers on two engines aggregate the same window at once: made once
        barrier = threading.Barrier(len(notifiers))
        made: list[int] = []

        def run(n: Notifier) -> None:
            barrier.wait()
            made.append(n.aggregate())

        threads = [threading.Thread(target=run, args=(n,)) for n in notifiers]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sum(made) == 2
        rows = _notifications(engine)
        assert {r.subject_id: json.loads(r.body)["count"] for r in rows} == \
            {"sub_alice": 3, "sub_bob": 1}
        assert _unnotified(engine) == 1
        receiver.statuses = [500]
        reports = [n.deliver(T0 + HOUR) for n in notifiers]
        assert sum(r.sent for r in reports) == 1 and sum(r.retried for r in reports) == 1
        assert notifiers[0].deliver(T0 + HOUR + timedelta(seconds=60)).sent == 1
        assert {r.state for r in _notifications(engine)} == {"sent"}
        assert len(receiver.received) == 3
        for got in receiver.received:
            verify_notification(got.body, got.headers[SIGNATURE_HEADER], keyring.jwks())
        with engine.begin() as conn:
            notify.forget(conn, Person("sub_alice", "ref", ()))
        assert [r.subject_id for r in _notifications(engine)] == ["sub_bob"]
    finally:
        for n in notifiers:
            n.close()
        other.dispose()
        engine.dispose()


def test_aggregation_rolls_back_when_another_process_marked_the_attempts(
        engine: Engine, make_notifier: Callable[..., Notifier]) -> None:
    """The marking must cover exactly what was counted; if not, nothing is kept."""
    from sqlalchemy import event

    _attempt(engine, "sub_alice", at=T0 + timedelta(minutes=5))
    notifier = make_notifier("http://127.0.0.1:9/")

    def steal(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO NOTIFICATIONS"):
            conn.execute(update(t.attempts).values(notified=True))

    event.listen(engine, "before_cursor_execute", steal)
    try:
        assert notifier.aggregate(T0 + HOUR) == 0
    finally:
        event.remove(engine, "before_cursor_execute", steal)
    assert _notifications(engine) == []


# -- the documentation's receiver example runs -------------------------------------------
def _doc_example() -> str:
    for name in ("incident-response.md",):
        doc = REPO / "docs" / name
        if not doc.is_file():
            continue
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"),
                                re.DOTALL):
            if "verify_notification" in block and "def receive" in block:
                return str(block)
    raise AssertionError("no receiver example (def receive ... verify_notification) in docs")


def test_the_documented_receiver_example_works(engine: Engine, keyring: SigningKeyring,
                                               receiver: Receiver,
                                               make_notifier: Callable[..., Notifier]
                                               ) -> None:
    body, _, notifier = _delivered(engine, receiver, make_notifier)
    signature = notifier.sign(json.loads(body)["notification_id"], body, utcnow())  # fresh
    namespace: dict[str, Any] = {}
    exec(compile(_doc_example(), "docs:receiver", "exec"), namespace)
    seen: set[str] = set()
    assert namespace["receive"](body, signature, keyring.jwks(), seen) == 200
    assert namespace["receive"](body, signature, keyring.jwks(), seen) == 200  # duplicate
    assert namespace["receive"](body + b"x", signature, keyring.jwks(), seen) == 401
