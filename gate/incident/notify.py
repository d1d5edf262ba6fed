"""Signed, aggregated webhook notifications about attempts on a person's face.

``gate.incident.attempts`` records, after each decision, which enrolled people a refused
or consent-needing check was about. ``Notifier`` turns those rows into notifications that
a deployment's webhook receives (and passes on to the people, by whatever channel it has):

- **Aggregated, never per request.** Time is cut into fixed windows of ``window_s``
  seconds aligned to the Unix epoch (an hour by default). Once a window has closed, every
  un-notified attempt in it becomes ONE notification per person (``aggregate``): the exact
  count and the first ``MAX_LISTED`` attempts (when, which app, which operation, what was
  decided). The notification and the marking of its attempts happen in one transaction.
  Nothing about a notification depends on one request's timing and the decision path
  never waits on it, so a requester cannot use the gate as an oracle for "is this face
  enrolled, did they get told": the check's answer and its timing are the same whether a
  notification will go out or not.
- **Signed with the published key.** Each POST carries ``X-Gate-Signature``: a compact JWS
  (Ed25519) made with the gate's signing keyring, the one whose public keys are served at
  ``/.well-known/jwks.json``. Its header says ``typ: gate-notification+jwt`` and its claims
  ``aud: consent-gate.notifications``, ``jti`` (the notification id), ``iat`` and
  ``sha256`` (hex digest of the exact body bytes). A grant-token verifier refuses it and
  ``verify_notification`` refuses grant tokens. The body itself is sent unchanged.
- **Retried, then dead-lettered.** A 2xx answer is delivery. Anything else (another
  status, a redirect, a network fault or timeout) counts a try and schedules the next at
  ``backoff_s * 2 ** (tries - 1)`` (capped at ``max_backoff_s``); after ``max_tries`` the
  notification is ``dead``: kept for operators (``dead_letters``), re-queued by
  ``retry_dead``. ``last_error`` is a status code or an exception class, never a body.
  Delivery is at least once: receivers de-duplicate on ``notification_id``.

With no webhook URL the notifier does nothing at all: attempts stay un-notified and
visible in the portal; if a URL is configured later, earlier closed windows are then
aggregated (one notification per person per window, as usual).

No notification holds an image, a prompt, an embedding, a request id or the requester's
user id: per attempt only ``at``, ``app_id``, ``operation`` and ``verdict``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from gate.clock import aware, unix_seconds, utcnow
from gate.consent.offline import ALGORITHM, jwks_key
from gate.consent.store import Person
from gate.consent.tokens import SigningKeyring
from gate.errors import GateError, InvalidRequest, NotFound
from gate.incident import tables as t

log = logging.getLogger("gate.incident")

#: JWS header ``typ`` of a notification signature (grant tokens say ``gate-grant+jwt``).
NOTIFICATION_TYPE = "gate-notification+jwt"
#: ``aud`` claim of a notification signature (never an app id).
NOTIFICATION_AUDIENCE = "consent-gate.notifications"
#: ``type`` of the notification body (and the ``X-Gate-Event`` header).
BODY_TYPE = "consent-gate.attempts"
SIGNATURE_HEADER = "X-Gate-Signature"
EVENT_HEADER = "X-Gate-Event"
#: Attempts listed in one notification (``count`` is always exact).
MAX_LISTED = 50
#: Notifications posted per ``deliver`` call, and windows aggregated per ``aggregate`` call.
BATCH = 100
MAX_WINDOWS_PER_RUN = 48
MAX_SIGNATURE_CHARS = 8192
_PG_LOCK = 0x6761_746E  # "gatn": one aggregating transaction at a time across replicas

State = Literal["pending", "sent", "dead"]


class NotificationInvalid(GateError):
    """A notification's signature is malformed, does not verify, is not a notification
    signature (e.g. a grant token), or does not match the body."""

    code = "notification_invalid"


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one ``deliver`` call did."""

    sent: int = 0
    retried: int = 0  # failed tries that will be tried again
    dead: int = 0  # failed for the last time (now dead letters)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one ``run_once`` call did."""

    aggregated: int  # notifications made
    delivery: DeliveryReport


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """A notification as operators see it (no body: it names the person's attempts)."""

    notification_id: str
    subject_id: str
    state: State
    tries: int
    next_at: datetime
    created_at: datetime
    last_error: str | None


class _Raced(Exception):
    """Another process aggregated (part of) the same window first; roll back."""


def _utc(value: datetime) -> datetime:
    return aware(value).astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat()


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The exact body bytes: compact JSON, sorted keys, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


class Notifier:
    """Aggregates attempts into notifications and delivers them (see module doc).

    ``engine`` holds the ``attempts`` and ``notifications`` tables; ``keyring`` is the
    gate's grant-signing keyring (its public JWKS verifies notifications). Thread-safe;
    several processes may share one database (aggregation is transactional, a delivery
    claims its notification first).
    """

    def __init__(self, engine: Engine, keyring: SigningKeyring, *, url: str | None,
                 window_s: int = 3600, max_tries: int = 8, backoff_s: float = 60.0,
                 timeout_s: float = 5.0, max_backoff_s: float = 6 * 3600.0,
                 clock: Callable[[], datetime] = utcnow,
                 client: httpx.Client | None = None) -> None:
        if url is not None and (not url.startswith(("https://", "http://"))
                                or len(url) > 2000):
            raise InvalidRequest("the notification webhook URL must be http(s)", field="url")
        if window_s < 1:
            raise InvalidRequest("window_s must be at least 1 second", field="window_s")
        if max_tries < 1:
            raise InvalidRequest("max_tries must be at least 1", field="max_tries")
        if not (backoff_s >= 0 and max_backoff_s >= 0 and timeout_s > 0):
            raise InvalidRequest("backoff and timeout must be positive", field="backoff_s")
        self.engine = engine
        self.keyring = keyring
        self.url = url or None
        self.window_s = int(window_s)
        self.max_tries = int(max_tries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self._client = client
        self._own_client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # counters for metrics (monotonic, this process)
        self.aggregated = 0  # notifications made
        self.sent = 0  # delivered (2xx)
        self.failed = 0  # failed tries (each one)
        self.dead = 0  # given up on (dead letters made)
        self.errors = 0  # background rounds that raised (database unreachable...)

    # -- aggregation ----------------------------------------------------------------------
    def window_of(self, at: datetime) -> tuple[datetime, datetime]:
        """The window ``[start, end)`` that ``at`` falls in."""
        start = math.floor(_utc(at).timestamp() / self.window_s) * self.window_s
        begin = datetime.fromtimestamp(start, UTC)
        return begin, begin + timedelta(seconds=self.window_s)

    def aggregate(self, now: datetime | None = None) -> int:
        """Turn un-notified attempts of closed windows into notifications, one per person
        per window; returns how many were made (0 without a URL)."""
        if self.url is None:
            return 0
        now = _utc(now or self.clock())
        closed_before, _ = self.window_of(now)
        made = 0
        for _ in range(MAX_WINDOWS_PER_RUN):
            try:
                n = self._aggregate_oldest(closed_before, now)
            except _Raced:
                log.info("notification aggregation raced another process; next round")
                break
            if n is None:
                break
            made += n
        with self._lock:
            self.aggregated += made
        return made

    def _aggregate_oldest(self, closed_before: datetime, now: datetime) -> int | None:
        """Aggregate the oldest closed window that has un-notified attempts (one
        transaction); ``None`` when there is none."""
        a = t.attempts.c
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE serialises
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            first = conn.execute(select(func.min(a.at)).where(
                a.notified.is_(False), a.at < closed_before)).scalar()
            if first is None:
                return None
            start, end = self.window_of(first)
            in_window = (a.notified.is_(False), a.at >= start, a.at < end)
            counts = {r[0]: int(r[1]) for r in conn.execute(
                select(a.subject_id, func.count()).where(*in_window).group_by(a.subject_id))}
            rank = func.row_number().over(partition_by=a.subject_id,
                                          order_by=(a.at, a.attempt_id)).label("rank")
            ranked = select(a.subject_id, a.at, a.app_id, a.operation, a.verdict, rank) \
                .where(*in_window).subquery()
            listed: dict[str, list[dict[str, Any]]] = {s: [] for s in counts}
            for r in conn.execute(select(ranked).where(ranked.c.rank <= MAX_LISTED)
                                  .order_by(ranked.c.subject_id, ranked.c.rank)):
                if r.subject_id in listed:
                    listed[r.subject_id].append({
                        "at": _iso(r.at), "app_id": r.app_id, "operation": r.operation,
                        "verdict": r.verdict})
            rows = []
            for subject_id in sorted(counts):
                notification_id = f"ntf_{uuid.uuid4().hex}"
                body = canonical({
                    "type": BODY_TYPE, "notification_id": notification_id,
                    "subject_id": subject_id, "window_start": _iso(start),
                    "window_end": _iso(end), "count": counts[subject_id],
                    "attempts": listed[subject_id]})
                rows.append({"notification_id": notification_id, "subject_id": subject_id,
                             "body": body.decode("utf-8"), "state": "pending", "tries": 0,
                             "next_at": now, "created_at": now, "last_error": None})
            if rows:
                conn.execute(insert(t.notifications), rows)
            marked = conn.execute(update(t.attempts).where(*in_window)
                                  .values(notified=True)).rowcount
            if marked != sum(counts.values()):
                raise _Raced()  # rolls the transaction back
        return len(rows)

    # -- delivery -------------------------------------------------------------------------
    def deliver(self, now: datetime | None = None) -> DeliveryReport:
        """POST every due pending notification (up to ``BATCH``), signed."""
        return self._deliver(now, None)

    def _deliver(self, now: datetime | None, interrupt: threading.Event | None
                 ) -> DeliveryReport:
        if self.url is None:
            return DeliveryReport()
        now = _utc(now or self.clock())
        n = t.notifications.c
        with self.engine.connect() as conn:
            due = conn.execute(select(n.notification_id, n.body, n.tries)
                               .where(n.state == "pending", n.next_at <= now)
                               .order_by(n.next_at, n.notification_id).limit(BATCH)).all()
        sent = retried = dead = 0
        for row in due:
            if interrupt is not None and interrupt.is_set():
                break  # the thread is stopping: the rest stay due
            if not self._claim(row.notification_id, now):
                continue  # another process is posting it
            error, reachable = self._post(row.notification_id, row.body.encode("utf-8"), now)
            if error is None:
                self._mark_sent(row.notification_id)
                sent += 1
            elif self._mark_failed(row.notification_id, int(row.tries) + 1, error, now):
                dead += 1
            else:
                retried += 1
            if not reachable:
                break  # the receiver is down: leave the rest due, untried, for next round
        with self._lock:
            self.sent += sent
            self.failed += retried + dead
            self.dead += dead
        return DeliveryReport(sent=sent, retried=retried, dead=dead)

    def _claim(self, notification_id: str, now: datetime) -> bool:
        """Lease the notification so another process does not post it at the same time
        (a crash mid-post leaves it due again once the lease ends; no try is counted)."""
        n = t.notifications.c
        lease = now + timedelta(seconds=self.timeout_s * 2 + 30)
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(t.notifications)
                .where(n.notification_id == notification_id, n.state == "pending",
                       n.next_at <= now).values(next_at=lease)).rowcount == 1)

    def _post(self, notification_id: str, body: bytes, now: datetime
              ) -> tuple[str | None, bool]:
        """``(error, reachable)``: error ``None`` on a 2xx; a short safe string else."""
        assert self.url is not None
        headers = {"Content-Type": "application/json", EVENT_HEADER: BODY_TYPE,
                   SIGNATURE_HEADER: self.sign(notification_id, body, now)}
        try:
            with self._http().stream("POST", self.url, content=body,
                                     headers=headers) as response:
                status = response.status_code  # the answer's body is never read
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            log.warning("notification delivery failed", extra={
                "notification_id": notification_id, "fault": type(exc).__name__})
            return type(exc).__name__[:200], False
        if 200 <= status < 300:
            return None, True
        log.warning("notification refused by the receiver", extra={
            "notification_id": notification_id, "status": status})
        return f"HTTP {status}", True

    def _mark_sent(self, notification_id: str) -> None:
        n = t.notifications.c
        with self.engine.begin() as conn:
            conn.execute(update(t.notifications).where(n.notification_id == notification_id)
                         .values(state="sent", last_error=None))

    def _mark_failed(self, notification_id: str, tries: int, error: str,
                     now: datetime) -> bool:
        """Count a failed try; True when it was the last (the notification is dead)."""
        n = t.notifications.c
        dead = tries >= self.max_tries
        next_at = now if dead else now + timedelta(seconds=self.backoff_delay(tries))
        with self.engine.begin() as conn:
            conn.execute(update(t.notifications).where(n.notification_id == notification_id)
                         .values(state="dead" if dead else "pending", tries=tries,
                                 next_at=next_at, last_error=error[:200]))
        if dead:
            log.warning("notification given up (dead letter)",
                        extra={"notification_id": notification_id, "tries": tries})
        return dead

    def backoff_delay(self, tries: int) -> float:
        """Seconds before the next try after ``tries`` failed ones."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, tries - 1)))

    def sign(self, notification_id: str, body: bytes, now: datetime | None = None) -> str:
        """The ``X-Gate-Signature`` value for ``body`` (see module doc)."""
        claims = {"aud": NOTIFICATION_AUDIENCE, "jti": notification_id,
                  "iat": unix_seconds(now or self.clock()),
                  "sha256": hashlib.sha256(body).hexdigest()}
        return _sign_typed(self.keyring, claims, NOTIFICATION_TYPE)

    def _http(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        with self._lock:
            if self._own_client is None:
                self._own_client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
            return self._own_client

    # -- both, and the background thread --------------------------------------------------
    def run_once(self, now: datetime | None = None) -> RunReport:
        """``aggregate`` then ``deliver``."""
        made = self.aggregate(now)
        return RunReport(aggregated=made, delivery=self.deliver(now))

    def start(self, interval_s: float = 60.0) -> Notifier:
        """Run ``run_once`` every ``interval_s`` in a daemon thread (idempotent)."""
        if not interval_s > 0:
            raise InvalidRequest("interval_s must be positive", field="interval_s")
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, args=(interval_s,),
                                                name="gate-notifications", daemon=True)
                self._thread.start()
        return self

    def _run(self, interval_s: float) -> None:
        while not self._stop.is_set():
            try:
                self.aggregate()
                self._deliver(None, self._stop)
            except Exception as exc:  # noqa: BLE001 - a database outage must not end the loop
                with self._lock:
                    self.errors += 1
                log.error("notification round failed", extra={"fault": type(exc).__name__})
            self._stop.wait(interval_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread (a round in progress ends after its current POST)."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout_s + 5 if timeout_s is None else timeout_s)

    def close(self) -> None:
        """``stop``, and close the HTTP client this notifier made (not one given)."""
        self.stop()
        with self._lock:
            client, self._own_client = self._own_client, None
        if client is not None:
            client.close()

    # -- operators ------------------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        """Notifications per state in the database (all replicas): gauges for metrics."""
        n = t.notifications.c
        with self.engine.connect() as conn:
            found = {r[0]: int(r[1]) for r in conn.execute(
                select(n.state, func.count()).group_by(n.state))}
        return {state: found.get(state, 0) for state in ("pending", "sent", "dead")}

    def dead_letters(self, limit: int = 100) -> list[NotificationRecord]:
        """Notifications given up on, oldest first."""
        n = t.notifications.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.notifications).where(n.state == "dead")
                                .order_by(n.created_at, n.notification_id)
                                .limit(limit)).all()
        return [_record(r) for r in rows]

    def get(self, notification_id: str) -> NotificationRecord:
        n = t.notifications.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.notifications)
                               .where(n.notification_id == notification_id)).first()
        if row is None:
            raise NotFound("no such notification")
        return _record(row)

    def retry_dead(self, notification_id: str, now: datetime | None = None) -> None:
        """Put a dead letter back in the queue (due now, with ``max_tries`` fresh tries)."""
        n = t.notifications.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.notifications)
                .where(n.notification_id == notification_id, n.state == "dead")
                .values(state="pending", tries=0, next_at=_utc(now or self.clock()))
            ).rowcount
        if done != 1:
            raise NotFound("no such dead notification")


def _record(row: Any) -> NotificationRecord:
    return NotificationRecord(
        notification_id=row.notification_id, subject_id=row.subject_id,
        state=cast(State, row.state),
        tries=int(row.tries), next_at=_utc(row.next_at), created_at=_utc(row.created_at),
        last_error=row.last_error)


def _sign_typed(keyring: SigningKeyring, claims: Mapping[str, Any], typ: str) -> str:
    """A compact JWS of ``claims`` by the keyring's active key, with header ``typ``."""
    return keyring.sign(claims, typ=typ)


# -- the receiver's side -----------------------------------------------------------------
def verify_notification(body: bytes, signature: str, jwks: Mapping[str, Any], *,
                        max_age_s: float | None = None,
                        now: datetime | None = None) -> dict[str, Any]:
    """What a receiver runs on each POST: check ``signature`` (the ``X-Gate-Signature``
    header) against the gate's published ``jwks`` and the exact ``body`` bytes; return the
    notification (the parsed body). Raises ``NotificationInvalid`` when the signature is
    malformed or does not verify, is not a notification signature (a grant token is
    refused), or signs another body. ``max_age_s`` also refuses signatures older than
    that (each try is signed afresh). De-duplicate on ``notification_id``."""
    if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS \
            or signature.count(".") != 2:
        raise NotificationInvalid("the notification signature is malformed")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise NotificationInvalid("the notification body must be the raw bytes received")
    try:
        header = jws.extract_compact(signature.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError) as exc:
        raise NotificationInvalid("the notification signature is malformed") from exc
    if header.get("typ") != NOTIFICATION_TYPE:
        raise NotificationInvalid("this is not a notification signature")
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise NotificationInvalid("the notification signature is not an Ed25519 signature")
    key = jwks_key(jwks, kid, invalid=NotificationInvalid, unknown=NotificationInvalid)
    try:
        payload = jws.deserialize_compact(signature, key, algorithms=[ALGORITHM]).payload
        claims = json.loads(payload)
    except (JoseError, ValueError) as exc:
        raise NotificationInvalid("the notification signature does not verify") from exc
    if not isinstance(claims, dict) or claims.get("aud") != NOTIFICATION_AUDIENCE:
        raise NotificationInvalid("this is not a notification signature")
    digest = claims.get("sha256")
    if not isinstance(digest, str) or not hmac.compare_digest(
            hashlib.sha256(bytes(body)).hexdigest(), digest):
        raise NotificationInvalid("the body does not match its signature")
    if max_age_s is not None:
        iat = claims.get("iat")
        age = unix_seconds(now or utcnow()) - (iat if isinstance(iat, int) else 0)
        if not -60 <= age <= max_age_s:
            raise NotificationInvalid("the notification signature is too old")
    try:
        notification = json.loads(bytes(body))
    except ValueError as exc:
        raise NotificationInvalid("the notification body is not JSON") from exc
    if not isinstance(notification, dict) or notification.get("type") != BODY_TYPE \
            or notification.get("notification_id") != claims.get("jti"):
        raise NotificationInvalid("the body is not the notification that was signed")
    return notification


# -- erasure and export hooks (registered in gate.consent.hooks) -------------------------
def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: every notification about the person (pending, sent or dead)."""
    conn.execute(delete(t.notifications)
                 .where(t.notifications.c.subject_id == person.subject_id))


def export(conn: Connection, person: Person) -> dict[str, Any]:
    """Export hook: the notifications about the person (newest 1000) with their state."""
    n = t.notifications.c
    rows = conn.execute(select(t.notifications).where(n.subject_id == person.subject_id)
                        .order_by(n.created_at.desc()).limit(1000)).all()
    out = []
    for row in rows:
        try:
            body = json.loads(row.body)
        except ValueError:
            body = {}
        out.append({"notification_id": row.notification_id, "state": row.state,
                    "created_at": _iso(row.created_at), "tries": int(row.tries),
                    "window_start": body.get("window_start"),
                    "window_end": body.get("window_end"), "count": body.get("count")})
    return {"notifications": out}
