"""Signed grants, issuer side: signing keys, grant tokens and the revocation feed.

A grant's token is a compact JWS (Ed25519) of its scope that an app can verify offline
(``gate.consent.offline``) against the public JWKS served at ``/.well-known/jwks.json``.
The keyring lives in ``data_dir/keys/signing.jwk`` (a JWKS with private parts, 0600; the
first key signs, older keys stay for verification until retired).

Every token issued is registered (``consent_tokens``: grant id, app, expiry; no subject
id), so the revocation feed (``consent_revocations``) can list every grant an app may hold
a token for once it stops covering anything: revoked (by the person, an operator, or by
switching to ``protected``), erased with its subject, or used up. The feed's ``epoch``
only grows; SDKs poll "everything after epoch N".
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gate import db
from gate.clock import aware, unix_seconds, utcnow
from gate.consent import tables as t
from gate.consent.offline import ALGORITHM, TOKEN_TYPE
from gate.durable import write_private
from gate.errors import ConsentError, NotFound, StorageError
from gate.types import Grant

#: A token never outlives this, even for a grant without an expiry (re-issue it).
DEFAULT_TOKEN_TTL_S = 30 * 24 * 3600


def grant_claims(grant: Grant, *, now: datetime, max_ttl_s: int = DEFAULT_TOKEN_TTL_S
                 ) -> dict[str, Any]:
    """The claim set of ``grant``'s token (``exp`` capped at ``now + max_ttl_s``)."""
    iat = unix_seconds(now)
    exp = iat + max_ttl_s
    if grant.expires_at is not None:
        exp = min(exp, unix_seconds(grant.expires_at))
    nbf = unix_seconds(grant.not_before) if grant.not_before is not None else iat
    claims: dict[str, Any] = {
        "sub": grant.subject_id, "gid": grant.grant_id, "aud": grant.app_id,
        "uid": grant.user_id, "ops": list(grant.operations), "content": list(grant.content),
        "purpose": grant.purpose, "nbf": nbf, "exp": exp, "iat": iat,
        "max_uses": grant.max_uses}
    if grant.formalities:  # how consent was given, when a pack needs to know
        claims["frm"] = sorted(grant.formalities)
    return claims


def _new_key() -> OKPKey:
    key = OKPKey.generate_key("Ed25519", private=True)
    return OKPKey.import_key({**key.as_dict(private=True), "kid": key.thumbprint()})


class SigningKeyring:
    """Ed25519 signing keys in a JWKS file; the first key is the active one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: list[OKPKey] = []
        self.reload()

    def reload(self) -> None:
        with self._lock:
            if not self.path.is_file():
                self._keys = [_new_key()]
                self._save()
                return
            if self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                keys = [OKPKey.import_key(k) for k in data["keys"]]
            except (OSError, ValueError, KeyError, TypeError, JoseError) as exc:
                raise StorageError(f"signing key file {self.path} is not valid") from exc
            if not keys or not keys[0].is_private or any(k.kid is None for k in keys):
                raise StorageError(f"signing key file {self.path} holds no usable key")
            self._keys = keys

    def _save(self) -> None:
        body = {"keys": [k.as_dict(private=k.is_private) for k in self._keys]}
        write_private(self.path, json.dumps(body, indent=1) + "\n")

    @property
    def active_kid(self) -> str:
        kid = self._keys[0].kid
        assert kid is not None
        return kid

    def kids(self) -> list[str]:
        return [str(k.kid) for k in self._keys]

    def rotate(self) -> str:
        """Add a new active key; old keys stay, so tokens they signed still verify."""
        with self._lock:
            self._keys = [_new_key(), *self._keys]
            self._save()
        return self.active_kid

    def retire(self, keep: int = 2) -> list[str]:
        """Drop all but the ``keep`` newest keys (their tokens stop verifying)."""
        keep = max(1, keep)
        with self._lock:
            dropped = [str(k.kid) for k in self._keys[keep:]]
            self._keys = self._keys[:keep]
            self._save()
        return dropped

    def sign(self, claims: Mapping[str, Any], *, typ: str = TOKEN_TYPE) -> str:
        """A compact JWS of ``claims`` by the active key; ``typ`` says what it is (a grant
        token by default; notifications use their own type so neither passes for the
        other)."""
        header = {"alg": ALGORITHM, "kid": self.active_kid, "typ": typ}
        payload = json.dumps(dict(claims), sort_keys=True, separators=(",", ":"))
        return jws.serialize_compact(header, payload.encode(), self._keys[0],
                                     algorithms=[ALGORITHM])

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (no private parts), every key that may still verify."""
        return {"keys": [{**k.as_dict(private=False), "alg": ALGORITHM, "use": "sig"}
                         for k in self._keys]}


@dataclass(frozen=True, slots=True)
class RevocationFeedPage:
    epoch: int
    revoked: list[dict[str, Any]]
    more: bool


class GrantTokens:
    """Issues grant tokens and keeps the revocation feed (see module doc)."""

    def __init__(self, engine: Engine, keyring: SigningKeyring, *,
                 token_ttl_s: int = DEFAULT_TOKEN_TTL_S, resync_s: float = 5.0) -> None:
        self.engine = engine
        self.keyring = keyring
        self.token_ttl_s = token_ttl_s
        #: The used-up state of counted grants reaches the feed within this.
        self.resync_s = resync_s
        self._lock = threading.Lock()
        self._seen: tuple[int, float] = (-1, 0.0)

    def issue(self, grant: Grant, *, now: datetime | None = None) -> Grant:
        """``grant`` with a fresh signed token (registered for the revocation feed)."""
        now = now or utcnow()
        claims = grant_claims(grant, now=now, max_ttl_s=self.token_ttl_s)
        token = self.keyring.sign(claims)
        expires = datetime.fromtimestamp(claims["exp"], now.tzinfo)
        c = t.consent_tokens.c
        with self.engine.begin() as conn:
            row = conn.execute(select(c.expires_at).where(c.grant_id == grant.grant_id)).first()
            if row is None:
                conn.execute(insert(t.consent_tokens).values(
                    grant_id=grant.grant_id, app_id=grant.app_id, kid=self.keyring.active_kid,
                    issued_at=now, expires_at=expires))
            elif aware(row[0]) < expires:
                conn.execute(update(t.consent_tokens).where(c.grant_id == grant.grant_id)
                             .values(expires_at=expires, kid=self.keyring.active_kid))
        return grant.model_copy(update={"token": token})

    def reissue(self, grant: Grant | None, *, app_id: str | None = None,
                now: datetime | None = None) -> Grant:
        """A fresh token for an existing, active grant (of ``app_id`` when given)."""
        now = now or utcnow()
        if grant is None or (app_id is not None and grant.app_id != app_id):
            raise NotFound("no such grant")
        if not grant.is_active(now):
            raise ConsentError("the grant is revoked, expired or used up")
        return self.issue(grant, now=now)

    def jwks(self) -> dict[str, Any]:
        return self.keyring.jwks()

    def rotate_signing_key(self) -> str:
        return self.keyring.rotate()

    # -- the revocation feed --------------------------------------------------------------
    def sync(self, epoch: int, *, force: bool = False, now: datetime | None = None) -> int:
        """List newly revoked / erased / used-up grants that have tokens.

        ``epoch`` is the consent change feed's head: the feed is re-read when it moved
        (revocations, erasures, status changes) and at least every ``resync_s`` (used-up
        grants change no feed row). Returns the number of grants added."""
        now_m = time.monotonic()
        with self._lock:
            seen_epoch, seen_at = self._seen
            if not force and epoch == seen_epoch and now_m - seen_at < self.resync_s:
                return 0
            added = self._sync(now or utcnow())
            self._seen = (epoch, now_m)
            return added

    def _sync(self, now: datetime) -> int:
        tok, g, r = t.consent_tokens.c, db.grants.c, t.consent_revocations.c
        query = (
            select(tok.grant_id, tok.app_id, tok.expires_at, g.grant_id.label("live"),
                   g.revoked_at)
            .select_from(t.consent_tokens
                         .outerjoin(db.grants, g.grant_id == tok.grant_id)
                         .outerjoin(t.consent_revocations, r.grant_id == tok.grant_id))
            .where(r.grant_id.is_(None), tok.expires_at > now,
                   or_(g.grant_id.is_(None), g.revoked_at.is_not(None),
                       and_(g.max_uses.is_not(None), g.uses >= g.max_uses))))
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    rows = conn.execute(query).all()
                    if rows:
                        conn.execute(insert(t.consent_revocations), [{
                            "grant_id": row.grant_id, "app_id": row.app_id,
                            "reason": "erased" if row.live is None else
                            "revoked" if row.revoked_at is not None else "used_up",
                            "at": now, "token_expires_at": row.expires_at} for row in rows])
                    return len(rows)
            except IntegrityError:
                continue  # another process listed some of them first; look again
        return 0

    def page(self, app_id: str, since_epoch: int = 0, limit: int = 5000) -> RevocationFeedPage:
        """Grant ids of ``app_id`` revoked after ``since_epoch`` (the SDK's feed); call
        ``sync`` first."""
        r = t.consent_revocations.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(r.epoch, r.grant_id, r.reason)
                                .where(r.app_id == app_id, r.epoch > since_epoch)
                                .order_by(r.epoch).limit(limit + 1)).all()
            head = int(conn.execute(select(func.max(r.epoch))).scalar() or 0)
        more = len(rows) > limit
        rows = rows[:limit]
        epoch = int(rows[-1].epoch) if more else max(head, since_epoch)
        return RevocationFeedPage(epoch=epoch, more=more, revoked=[
            {"grant_id": x.grant_id, "epoch": int(x.epoch), "reason": x.reason} for x in rows])

    def prune(self, now: datetime) -> int:
        """Drop entries whose tokens have expired (an expired token fails anyway); the
        newest entry stays so the epoch never goes back."""
        r = t.consent_revocations.c
        with self.engine.begin() as conn:
            head = conn.execute(select(func.max(r.epoch))).scalar()
            if head is None:
                return 0
            return int(conn.execute(delete(t.consent_revocations).where(
                r.token_expires_at < now, r.epoch < head)).rowcount)

