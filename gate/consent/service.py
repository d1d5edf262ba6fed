"""``ConsentService``: the people-facing consent parts, composed around one gate.

Each responsibility lives in its own module and class; this class only builds them and
holds them together for the HTTP routes and the ``gate consent`` commands:

- ``lifecycle`` (``gate.consent.lifecycle``): enrol, status, grant, revoke, erase, export
  (the gate's own: every door shares it);
- ``tokens`` (``gate.consent.tokens``): signing keys, grant tokens, the revocation feed;
- ``links`` (``gate.consent.links``): one-time links, sessions, CSRF, liveness challenges;
- ``proof`` (``gate.consent.proof``): liveness + identity proofs;
- ``requests`` (``gate.consent.requests``): consent requests and app webhooks;
- ``portal`` (``gate.consent.portal``): the person's portal and self-enrolment;
- ``activity`` / ``run_retention`` (``gate.consent.retention``).

It depends on ``ConsentHost`` (anything with a ``lifecycle`` and ``settings``: a
``FaceGate``), never on ``gate.engine``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Engine

from gate.clock import utcnow
from gate.consent.config import ConsentConfig
from gate.consent.lifecycle import SubjectLifecycle
from gate.consent.links import Links
from gate.consent.portal import Portal
from gate.consent.proof import Proof, ProofThresholds
from gate.consent.requests import ConsentRequests, WebhookSender
from gate.consent.retention import ActivityLog, RetentionReport, run_retention
from gate.consent.tokens import GrantTokens, RevocationFeedPage
from gate.errors import ConsentError, StorageError

if TYPE_CHECKING:
    from gate.settings import Settings


class ConsentHost(Protocol):
    """What the consent parts need from a gate."""

    @property
    def lifecycle(self) -> SubjectLifecycle: ...

    @property
    def settings(self) -> Settings: ...

    def formalities_for(self, operation: str, content: Sequence[str],
                        jurisdictions: Sequence[str] = ()) -> frozenset[str]: ...

    def retention_days(self) -> int | None: ...


class ConsentService:
    """See the module doc."""

    def __init__(self, host: ConsentHost, config: ConsentConfig | None = None, *,
                 clock: Callable[[], datetime] | None = None,
                 sender: WebhookSender | None = None) -> None:
        self.lifecycle = host.lifecycle
        self.config = config or ConsentConfig()
        self.clock = clock or utcnow
        self.host = host
        engine = getattr(self.lifecycle.store, "engine", None)
        if not isinstance(engine, Engine):
            raise StorageError("the consent lifecycle needs an SQL consent store")
        self.engine = engine
        settings = host.settings
        self.links = Links(engine, self.config, self.clock)
        self.proof = Proof(self.lifecycle, self.links, self.config, ProofThresholds(
            match=settings.match_threshold, allow=settings.permissive_threshold))
        self.sender = sender or WebhookSender(timeout_s=self.config.webhook_timeout_s,
                                              attempts=self.config.webhook_attempts)
        self.activity = ActivityLog(engine, self.lifecycle.audit, self.lifecycle.ref)
        self.requests = ConsentRequests(engine, self.lifecycle, self.links, self.proof,
                                        self.config, self.clock, self.sender,
                                        host.formalities_for)
        self.portal = Portal(engine, self.lifecycle, self.links, self.proof, self.activity,
                             self.config, self.clock)

    @property
    def tokens(self) -> GrantTokens:
        if self.lifecycle.tokens is None:
            raise ConsentError("grant tokens are not configured on this gate")
        return self.lifecycle.tokens

    def jwks(self) -> dict[str, Any]:
        return self.tokens.jwks()

    def revocations(self, app_id: str, since_epoch: int = 0,
                    limit: int = 5000) -> RevocationFeedPage:
        """``app_id``'s grants revoked (erased, used up) after ``since_epoch``."""
        self.tokens.sync(self.lifecycle.store.epoch())
        return self.tokens.page(app_id, since_epoch, limit)

    def run_retention(self, now: datetime | None = None, max_idle_days: int | None = None,
                      *, dry_run: bool = False) -> RetentionReport:
        """``max_idle_days`` defaults to the shortest retention window of the jurisdiction
        packs in force (e.g. 3 years after the last interaction in Illinois), else 3 years."""
        from gate.consent.retention import DEFAULT_MAX_IDLE_DAYS

        days = max_idle_days or self.host.retention_days() or DEFAULT_MAX_IDLE_DAYS
        return run_retention(self, now, min(days, DEFAULT_MAX_IDLE_DAYS)
                             if max_idle_days is None else days, dry_run=dry_run)

    def close(self) -> None:
        self.sender.close()
