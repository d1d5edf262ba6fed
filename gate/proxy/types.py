"""Values shared by the proxy's parts: what a request mapping produces, and proxy errors.

A mapping module (``openai``, ``a1111``, ``comfyui``) turns one upstream request into
``GateFields`` (what the gate must decide on) and a ``Forward`` (what to send upstream if
the gate allows). ``ProxyError`` carries a status, a stable code and a message that is safe
to show; each app renders it in its upstream API's own error style.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gate.types import Decision, ImageInput

Mode = Literal["openai", "a1111", "comfyui"]
MODES: tuple[Mode, ...] = ("openai", "a1111", "comfyui")


@dataclass(frozen=True, slots=True)
class GateFields:
    """The parts of a ``GateRequest`` a mapping can know (the requester comes from auth)."""

    operation: str
    images: tuple[ImageInput, ...] = ()
    prompt: str = ""
    negative_prompt: str = ""
    #: The end user named inside the upstream request (OpenAI's ``user``), if any.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """One upstream call: the body is sent byte for byte with ``content_type``."""

    path: str
    content: bytes = b""
    content_type: str | None = None
    method: str = "POST"
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a ``multipart/form-data`` body, held in memory for one request."""

    name: str
    data: bytes = field(repr=False)
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class ProxyError(Exception):
    """An error answered to the client in the upstream API's style."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


class Malformed(ProxyError):
    """The request is not valid for the upstream API (400, or 422 where the API says so).

    ``code`` is ``invalid_request`` unless a more precise one applies: ``unknown_parameter``
    (a field the proxy does not know), ``unexpected_image`` (an image where the API takes
    none), ``ambiguous_image`` (an inline value that reads as two different files),
    ``ambiguous_multipart`` (a form part the upstream could read another way).
    """

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str = "invalid_request") -> None:
        super().__init__(status, code, message, param=param)


def unknown_field(name: str, *, status: int = 400) -> Malformed:
    """A field that is not in the route's allow-list: refused, never forwarded."""
    return Malformed(f"Unknown parameter: '{name[:64]}'. The consent gate forwards only the "
                     "fields it knows and checks.", param=name[:64], status=status,
                     code="unknown_parameter")


class BadUpstream(ProxyError):
    """The upstream answered something the proxy cannot screen (502, nothing is returned)."""

    def __init__(self, message: str, *, code: str = "bad_upstream_response") -> None:
        super().__init__(502, code, message)


class Unverifiable(ProxyError):
    """The request uses a face the gate cannot see (a stored face model, a remote URL)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(422, "unverifiable_face_source", message, param=param)


class Refused(ProxyError):
    """The gate did not allow the request or its output: 403 with the decision."""

    def __init__(self, decision: Decision, *, stage: Literal["input", "output"]) -> None:
        code = "consent_required" if decision.verdict == "needs_consent" else "consent_denied"
        reasons = "; ".join(r.message for r in decision.reasons) or "no rule allowed it"
        what = "the generated image was withheld" if stage == "output" else \
            "the request was not forwarded"
        super().__init__(403, code, f"consent-gate: {decision.verdict}: {what}: {reasons}")
        self.decision = decision
        self.stage = stage

    def decision_json(self) -> dict[str, Any]:
        return {**self.decision.model_dump(mode="json"), "stage": self.stage}
