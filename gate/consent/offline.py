"""Offline verification of grant tokens: what an app needs to accept a grant without
asking the gate on every request (the SDK side of ``gate.consent.tokens``).

    from gate import OfflineGrantVerifier
    from gate.consent.offline import JwksCache, RevocationList, SidecarFeed

    feed = SidecarFeed("http://gate:8080", api_key)
    revocations = RevocationList(feed.revocations, max_staleness_s=5).start()
    verifier = OfflineGrantVerifier(JwksCache(feed.jwks), revocations, app_id="studio")
    claims = verifier.verify(token, operation="face_swap", content=["general"])

``verify_grant_token`` checks signature, key id, audience and validity window;
``RevocationList`` keeps an epoch-keyed list of revoked grant ids fresh by a short poll and
refuses to answer (fails closed) once it is staler than its bound; ``OfflineGrantVerifier``
puts the two together with the grant's scope (``GrantScope``, the same rule the gate uses).

Token format (header ``{"alg": "Ed25519", "kid": ..., "typ": "gate-grant+jwt"}``): the
signature is EdDSA over Ed25519 (RFC 8037); the header uses the fully specified algorithm
name of RFC 9864. Tokens whose header says ``"EdDSA"`` (the older name for the same
signature) verify too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from gate.clock import unix_seconds, utcnow
from gate.errors import ConsentError, GateError
from gate.types import GrantScope

log = logging.getLogger("gate.consent")

ALGORITHM = "Ed25519"
_ACCEPTED_ALGS = ("Ed25519", "EdDSA")
TOKEN_TYPE = "gate-grant+jwt"  # noqa: S105 - a JOSE "typ" value, not a secret
MAX_TOKEN_CHARS = 8192


# -- errors: one code per reason a token is refused (messages never contain the token) --
class TokenInvalid(ConsentError):
    """Malformed, tampered with, or signed by a key that does not verify it."""

    code = "token_invalid"


class TokenUnknownKey(TokenInvalid):
    """Signed with a key id that is not in the JWKS."""

    code = "token_unknown_key"


class TokenExpired(TokenInvalid):
    code = "token_expired"


class TokenNotYetValid(TokenInvalid):
    code = "token_not_yet_valid"


class TokenWrongAudience(TokenInvalid):
    """Issued to another app."""

    code = "token_wrong_audience"


class GrantRevoked(TokenInvalid):
    """The grant was revoked, its subject erased, or its uses are spent."""

    code = "grant_revoked"


class GrantNotCovering(TokenInvalid):
    """Valid token, but its scope does not cover this request."""

    code = "grant_not_covering"


class GrantNeedsOnlineCheck(TokenInvalid):
    """A grant with ``max_uses`` can only be counted by the gate, not offline."""

    code = "grant_counted_online"


class RevocationListStale(TokenInvalid):
    """The revocation list is older than its staleness bound: fail closed."""

    code = "revocation_list_stale"


# -- claims -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GrantClaims:
    """What a verified grant token says. Times are Unix seconds (UTC)."""

    sub: str  # subject id
    gid: str  # grant id
    aud: str  # grantee app id
    uid: str | None  # grantee user id (None: any user of the app)
    ops: tuple[str, ...]
    content: tuple[str, ...]
    purpose: str | None
    nbf: int
    exp: int
    iat: int
    max_uses: int | None
    kid: str
    #: Consent formalities the grant records (gate.types.FORMALITIES).
    frm: tuple[str, ...] = ()

    @property
    def scope(self) -> GrantScope:
        """The grant's scope: the same rule as ``Grant.covers`` applies to it."""
        return GrantScope.model_validate({
            "app_id": self.aud, "user_id": self.uid, "operations": list(self.ops),
            "content": list(self.content), "purpose": self.purpose})

    def covers(self, *, operation: str, content: Sequence[str], user_id: str | None = None,
               purpose: str | None = None) -> bool:
        """``GrantScope.covers_request`` for this token's app (time and audience are
        checked by ``verify_grant_token`` already)."""
        try:
            scope = self.scope
        except ValueError:  # an operation or category this version does not know
            return False
        return scope.covers_request(app_id=self.aud, user_id=user_id, operation=operation,
                                    content=content, purpose=purpose)



# -- verification ----------------------------------------------------------------------
def jwks_key(jwks: Mapping[str, Any], kid: str, *,
             invalid: type[GateError] = TokenInvalid,
             unknown: type[GateError] = TokenUnknownKey) -> OKPKey:
    """The Ed25519 public key ``kid`` of a JWKS (``invalid`` when it is not one or is
    malformed, ``unknown`` when the JWKS does not hold it). Grant tokens and notification
    signatures both verify with it."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    for entry in keys if isinstance(keys, list) else []:
        if isinstance(entry, Mapping) and entry.get("kid") == kid:
            if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                raise invalid("the signing key is not an Ed25519 key")
            try:
                # public members only; "alg" is dropped so either header name verifies
                return OKPKey.import_key({k: entry[k] for k in ("kty", "crv", "x", "kid")})
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise invalid("the signing key in the JWKS is malformed") from exc
    raise unknown("the signature was made with a key the JWKS does not hold")


def _header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenInvalid("the grant token is malformed")
    try:
        header = jws.extract_compact(token.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError) as exc:
        raise TokenInvalid("the grant token is malformed") from exc
    if header.get("alg") not in _ACCEPTED_ALGS or not isinstance(header.get("kid"), str):
        raise TokenInvalid("the grant token's header is not an Ed25519 grant header")
    if header.get("typ", TOKEN_TYPE) != TOKEN_TYPE:
        raise TokenInvalid("the token is not a grant token")
    return dict(header)


def _verified_payload(token: str, key: OKPKey, alg: str) -> bytes:
    try:
        with warnings.catch_warnings():
            # joserfc warns that the name "EdDSA" is deprecated (RFC 9864); same signature.
            warnings.simplefilter("ignore")
            obj = jws.deserialize_compact(token, key, algorithms=[alg])
    except JoseError as exc:
        raise TokenInvalid("the grant token's signature does not verify") from exc
    return obj.payload


def _claims(payload: bytes, kid: str) -> GrantClaims:
    try:
        raw = json.loads(payload)
        uid, purpose, max_uses = raw.get("uid"), raw.get("purpose"), raw.get("max_uses")
        claims = GrantClaims(
            sub=str(raw["sub"]), gid=str(raw["gid"]), aud=str(raw["aud"]),
            uid=None if uid is None else str(uid),
            ops=tuple(str(o) for o in raw["ops"]),
            content=tuple(str(c) for c in raw["content"]),
            purpose=None if purpose is None else str(purpose),
            nbf=int(raw["nbf"]), exp=int(raw["exp"]), iat=int(raw["iat"]),
            max_uses=None if max_uses is None else int(max_uses), kid=kid,
            frm=tuple(str(f) for f in raw.get("frm") or ()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TokenInvalid("the grant token's claims are malformed") from exc
    return claims


def verify_grant_token(token: str, *, jwks: Mapping[str, Any], app_id: str,
                       now: datetime | None = None, leeway_s: int = 0) -> GrantClaims:
    """Verify signature, key, audience and validity window; raise a ``TokenInvalid``.

    Does not consult revocations (see ``RevocationList``) nor the request's scope
    (``GrantClaims.covers``).
    """
    header = _header(token)
    kid = header["kid"]
    key = jwks_key(jwks, kid)
    claims = _claims(_verified_payload(token, key, header["alg"]), kid)
    if claims.aud != app_id:
        raise TokenWrongAudience("the grant token was issued to another app")
    t = unix_seconds(now or utcnow())
    if t + leeway_s < claims.nbf:
        raise TokenNotYetValid("the grant token is not valid yet")
    if t - leeway_s >= claims.exp:
        raise TokenExpired("the grant token has expired")
    return claims


# -- revocation list (SDK side) --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RevocationPage:
    """One answer of ``GET /v1/revocations?since_epoch=N``."""

    epoch: int  # the newest epoch the answer covers
    revoked: tuple[str, ...]  # grant ids revoked after ``since_epoch``
    more: bool = False  # another page follows (ask again from ``epoch``)


Fetch = Callable[[int], RevocationPage]


@dataclass
class _State:
    epoch: int = 0
    revoked: set[str] = field(default_factory=set)
    fresh_at: float | None = None  # monotonic time the last complete refresh was *sent*
    failures: int = 0


class RevocationList:
    """Revoked grant ids, kept fresh by polling; answers only while fresh enough.

    ``fresh_at`` is when the last successful refresh was *sent*, so the list is known to
    contain every revocation made before that moment. ``is_revoked`` raises
    ``RevocationListStale`` when that moment is more than ``max_staleness_s`` ago.
    """

    def __init__(self, fetch: Fetch, *, max_staleness_s: float = 5.0,
                 poll_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if poll_interval_s >= max_staleness_s:
            raise ValueError("poll_interval_s must be shorter than max_staleness_s")
        self._fetch = fetch
        self.max_staleness_s = max_staleness_s
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._state = _State()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def epoch(self) -> int:
        return self._state.epoch

    def age_s(self) -> float:
        fresh_at = self._state.fresh_at
        return float("inf") if fresh_at is None else self._clock() - fresh_at

    def refresh(self) -> int:
        """Fetch what changed since the current epoch; returns ids newly revoked."""
        sent = self._clock()
        epoch, added = self._state.epoch, set[str]()
        for _ in range(1000):  # pages; bounded
            page = self._fetch(epoch)
            added.update(page.revoked)
            epoch = max(epoch, page.epoch)
            if not page.more:
                break
        with self._lock:
            self._state.revoked |= added
            self._state.epoch = max(self._state.epoch, epoch)
            if self._state.fresh_at is None or sent > self._state.fresh_at:
                self._state.fresh_at = sent
            self._state.failures = 0
        return len(added)

    def is_revoked(self, grant_id: str) -> bool:
        if self.age_s() > self.max_staleness_s:
            raise RevocationListStale("the revocation list is too old to trust; refused")
        return grant_id in self._state.revoked

    # background polling
    def start(self) -> RevocationList:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gate-revocations",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RevocationList:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - any fetch fault: the list ages, fails closed
                self._state.failures += 1
                log.warning("revocation refresh failed", extra={"fault": type(exc).__name__})
            self._stop.wait(self.poll_interval_s)


class JwksCache:
    """The gate's public keys; refetched (at most every ``min_refetch_s``) on an unknown
    key id, so a rotation is picked up without a restart."""

    def __init__(self, fetch: Callable[[], Mapping[str, Any]], *, min_refetch_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._jwks: Mapping[str, Any] = {"keys": []}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def get(self, kid: str | None = None) -> Mapping[str, Any]:
        with self._lock:
            known = {k.get("kid") for k in self._jwks.get("keys", [])}
            now = self._clock()
            due = self._fetched_at is None or (
                kid is not None and kid not in known
                and now - self._fetched_at >= self._min_refetch_s)
            if due:
                self._jwks = self._fetch()
                self._fetched_at = now
            return self._jwks


class OfflineGrantVerifier:
    """Everything an embedded SDK needs to accept a grant token without asking the gate.

    Refuses (raises a ``TokenInvalid``) for a bad token, another app's token, an expired
    token, a revoked grant, a stale revocation list, a scope that does not cover the
    request, and, unless ``allow_counted``, a grant with ``max_uses`` (only the gate can
    count uses exactly).
    """

    def __init__(self, jwks: JwksCache | Mapping[str, Any], revocations: RevocationList,
                 app_id: str, *, allow_counted: bool = False, leeway_s: int = 0) -> None:
        self._jwks = jwks
        self.revocations = revocations
        self.app_id = app_id
        self.allow_counted = allow_counted
        self.leeway_s = leeway_s

    def _keys(self, token: str) -> Mapping[str, Any]:
        if isinstance(self._jwks, JwksCache):
            return self._jwks.get(_header(token)["kid"])
        return self._jwks

    def verify(self, token: str, *, operation: str, content: Sequence[str] = ("general",),
               user_id: str | None = None, purpose: str | None = None,
               now: datetime | None = None) -> GrantClaims:
        claims = verify_grant_token(token, jwks=self._keys(token), app_id=self.app_id,
                                    now=now, leeway_s=self.leeway_s)
        if self.revocations.is_revoked(claims.gid):
            raise GrantRevoked("the grant was revoked")
        if claims.max_uses is not None and not self.allow_counted:
            raise GrantNeedsOnlineCheck("a grant with a use limit must be checked by the gate")
        if not claims.covers(operation=operation, content=content, user_id=user_id,
                             purpose=purpose):
            raise GrantNotCovering("the grant does not cover this request")
        return claims


# -- HTTP access to a sidecar (SDK side) ----------------------------------------------------
class SidecarFeed:
    """The sidecar's JWKS and revocation feed over HTTP (one pooled client; ``close`` it).

    ``RevocationList(feed.revocations)`` and ``JwksCache(feed.jwks)``; the revocation feed
    needs an API key with the ``check`` scope and lists that key's app only.
    """

    def __init__(self, base_url: str, api_key: str, *, client: Any = None,
                 timeout_s: float = 2.0) -> None:
        import httpx

        self._own = client is None
        self._http = client or httpx.Client(base_url=base_url, timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def revocations(self, since_epoch: int) -> RevocationPage:
        r = self._http.get("/v1/revocations", params={"since_epoch": since_epoch},
                           headers=self._headers)
        r.raise_for_status()
        body = r.json()
        return RevocationPage(epoch=int(body["epoch"]),
                              revoked=tuple(str(x["grant_id"]) for x in body["revoked"]),
                              more=bool(body.get("more", False)))

    def jwks(self) -> Mapping[str, Any]:
        r = self._http.get("/.well-known/jwks.json")
        r.raise_for_status()
        body: Mapping[str, Any] = r.json()
        return body

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> SidecarFeed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
