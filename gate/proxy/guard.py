"""The proxy's one flow around the engine: check before forwarding, screen and label after.

``Guard.check`` runs ``FaceGate.check`` on the engine's own bounded workers, within the
engine's deadline (a timeout is the engine's ``core.fail_closed`` deny, never an allow),
and raises ``Refused`` (403) unless the verdict is allow. Engine errors are answered with
the statuses of the sidecar's one table (``gate.api.errors.status_for``).
``Guard.release`` screens every generated image with ``FaceGate.check_output``
(which can only tighten) and applies the image obligations of both decisions:
``label_ai_content`` (implicit metadata label) and ``embed_c2pa_manifest`` (a signed C2PA
manifest; without a configured signer the output is withheld, 503, since an obligation
that cannot be met must not be skipped). Other obligations (``notify_subject``,
``log_for_review``) are not about image bytes: the decision is in the audit log and they
are reported in the ``X-Gate-Obligations`` header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread
from pydantic import ValidationError

from gate.api.errors import status_for
from gate.engine import FaceGate
from gate.errors import GateError, InvalidImage, InvalidRequest
from gate.imaging.decode import sniff_format
from gate.marking.labels import LabelInfo, label_image
from gate.marking.provenance import ManifestSigner
from gate.proxy.settings import ProxySettings
from gate.proxy.types import BadUpstream, GateFields, Malformed, ProxyError, Refused
from gate.types import Decision, GateRequest, Requester

T = TypeVar("T")
IMAGE_OBLIGATIONS = frozenset({"label_ai_content", "embed_c2pa_manifest"})
_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
          "BMP": "image/bmp"}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks (from the gate key or the single-tenant app id) and the request's id."""

    requester: Requester
    request_id: str
    purpose: str | None = None
    #: Jurisdiction packs the caller's gate key adds to the deployment's.
    jurisdictions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Released:
    """A screened output image, with its obligations applied."""

    data: bytes
    media_type: str
    obligations: tuple[str, ...]


class Guard:
    def __init__(self, gate: FaceGate, settings: ProxySettings,
                 signer: ManifestSigner | None = None) -> None:
        self.gate = gate
        self.settings = settings
        self.signer = signer

    async def check(self, caller: Caller, fields: GateFields, *,
                    prescreen: bool = False) -> Decision:
        """The input decision; ``Refused`` unless it allows.

        ``prescreen`` (an upload, not yet a generation): only ``deny`` is refused, since the
        operation that will use the image, and so the consent it needs, is not known yet.
        """
        requester = caller.requester
        if requester.user_id is None and fields.user_id is not None:
            requester = requester.model_copy(update={"user_id": fields.user_id})
        try:
            request = GateRequest.model_validate({
                "operation": fields.operation, "images": list(fields.images),
                "prompt": fields.prompt, "negative_prompt": fields.negative_prompt,
                "purpose": caller.purpose, "requester": requester,
                "request_id": caller.request_id, "jurisdictions": list(caller.jurisdictions)})
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0].get("loc", ()))
            raise Malformed(f"the request cannot be checked: {where} is invalid",
                            param=where or None) from None
        try:
            decision = await self.gate.check_async(request)
        except (InvalidImage, InvalidRequest) as exc:
            raise ProxyError(status_for(exc), exc.code, exc.message) from None
        except GateError as exc:
            raise ProxyError(status_for(exc), exc.code,
                             "the consent gate is unavailable") from None
        if decision.verdict == "deny" or not (decision.allowed or prescreen):
            raise Refused(decision, stage="input")
        return decision

    async def release(self, caller: Caller, decision: Decision, fields: GateFields,
                      images: Sequence[bytes], grant_ids: Sequence[str] = ()
                      ) -> list[Released]:
        """Screen every output; ``Refused`` as soon as one is not allowed (all withheld)."""
        requester = caller.requester
        if requester.user_id is None and fields.user_id is not None:
            requester = requester.model_copy(update={"user_id": fields.user_id})
        out: list[Released] = []
        for image in images:
            try:
                screened = await self.gate.check_output_async(
                    image, request_id=decision.request_id, jurisdictions=caller.jurisdictions,
                    requester=requester, operation=fields.operation,
                    content=decision.content or ["general"], prompt=fields.prompt)
            except InvalidImage as exc:
                raise BadUpstream(f"an output image cannot be screened: {exc.message}",
                                  code="invalid_upstream_image") from None
            except GateError as exc:
                raise ProxyError(status_for(exc), exc.code,
                                 "the consent gate is unavailable") from None
            if not screened.allowed:
                raise Refused(screened, stage="output")
            obligations = tuple(dict.fromkeys([*decision.obligations, *screened.obligations]))
            info = self.label_info(decision, screened, grant_ids)
            out.append(await anyio.to_thread.run_sync(self.apply, image, obligations, info,
                                                      decision))
        return out

    def label_info(self, decision: Decision, screened: Decision | None = None,
                   grant_ids: Sequence[str] = ()) -> LabelInfo:
        grants = [*grant_ids, *(f.grant_id for d in (decision, screened) if d is not None
                                for f in d.faces if f.grant_id)]
        return LabelInfo(content_producer=self.settings.content_producer,
                         produce_id=decision.request_id, grant_ids=tuple(dict.fromkeys(grants)),
                         policy_version=decision.policy_version)

    def apply(self, data: bytes, obligations: Sequence[str], info: LabelInfo,
              decision: Decision | None = None) -> Released:
        """Label one screened output (blocking; run in a thread): with the engine's
        incident desk (every output marked, so ``trace`` finds its request; visible label,
        implicit labels and C2PA as the obligations ask), or, without one, the implicit
        labels and C2PA manifest only."""
        media = _MEDIA.get(sniff_format(data) or "", "application/octet-stream")
        try:
            if decision is not None and self.gate.incident is not None:
                merged = decision.model_copy(update={"obligations": list(obligations)})
                labelled = self.gate.label(data, request_id=decision.request_id,
                                           decision=merged, signer=self.signer)
                return Released(labelled.data, labelled.media_type, tuple(obligations))
            if "label_ai_content" in obligations or "embed_c2pa_manifest" in obligations:
                data, media = label_image(data, info)
            if "embed_c2pa_manifest" in obligations:
                if self.signer is None:
                    raise ProxyError(503, "obligation_unmet", "the policy requires a C2PA "
                                     "manifest but no C2PA signer is configured")
                data = self.signer.sign(data, media, info)
        except InvalidImage as exc:
            raise BadUpstream(f"an output image cannot be labelled: {exc.message}",
                              code="invalid_upstream_image") from None
        except GateError as exc:
            raise ProxyError(503, "obligation_unmet", exc.message) from None
        return Released(data, media, tuple(obligations))
