"""Knobs of the consent lifecycle's people-facing parts (env prefix ``GATE_CONSENT_``).

Grant-token settings (signing key file, token lifetime, revocation resync) belong to the
core and live in ``gate.settings.Settings`` (same ``GATE_CONSENT_*`` variable names).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gate.consent.liveness import LivenessConfig


class ConsentConfig(BaseSettings):
    """``GATE_CONSENT_PUBLIC_URL=https://consent.example``, etc."""

    model_config = SettingsConfigDict(env_prefix="GATE_CONSENT_", extra="forbid", frozen=True)

    #: Base URL people reach the portal at (links are ``{public_url}/portal/...``).
    public_url: str = "http://127.0.0.1:8080"
    request_ttl_s: int = Field(default=7 * 86400, ge=60)
    portal_link_ttl_s: int = Field(default=15 * 60, ge=30)
    session_ttl_s: int = Field(default=30 * 60, ge=30)
    challenge_ttl_s: int = Field(default=120, ge=10)
    #: How long an app's self-enrolment link stays valid.
    self_enrolment_ttl_s: int = Field(default=24 * 3600, ge=60)
    #: Cookies carry ``Secure`` (turn off only for plain-HTTP development).
    secure_cookies: bool = True
    #: Anyone may enrol themselves through ``/portal/enrol.html`` (liveness-checked).
    self_enrolment: bool = False
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1, le=10)
    liveness_front_max: float = 0.08
    liveness_turn_min: float = 0.16
    liveness_same_person_min: float = 0.30

    def liveness(self) -> LivenessConfig:
        return LivenessConfig(front_max=self.liveness_front_max,
                              turn_min=self.liveness_turn_min,
                              same_person_min=self.liveness_same_person_min)
