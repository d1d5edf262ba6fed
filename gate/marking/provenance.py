"""C2PA manifests for generated images (obligation ``embed_c2pa_manifest``).

``ManifestSigner`` is the extension point: anything that turns labelled image bytes into
signed bytes. ``C2paSigner`` implements it with ``c2pa-python`` (optional; imported only
when a signer is configured) and a PEM certificate chain and private key, entirely
offline. When the upstream's output already carried a C2PA manifest, that manifest is
added as the ``parentOf`` ingredient, so it lives on inside the new manifest store
instead of being stripped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gate import __version__
from gate.errors import GateError
from gate.marking.labels import DIGITAL_SOURCE_TYPE, LabelInfo, has_c2pa

PARENT_LABEL = "upstream-output"


class ProvenanceError(GateError):
    """A C2PA manifest could not be made (no signer, bad certificate, library error)."""

    code = "provenance_failed"


class ManifestSigner(Protocol):
    def sign(self, data: bytes, media_type: str, info: LabelInfo) -> bytes:
        """``data`` with a signed C2PA manifest embedded."""
        ...


def manifest_definition(info: LabelInfo, *, has_parent: bool) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action": "c2pa.opened", "parameters": {"ingredientIds": [PARENT_LABEL]}} \
        if has_parent else {"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE}
    return {
        "claim_generator_info": [{"name": "consent-gate", "version": __version__}],
        "title": f"{info.produce_id}",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [action]}},
            {"label": "org.consent-gate.decision", "data": info.gate_record()},
        ],
    }


class C2paSigner:
    """Signs with ``c2pa-python`` (``pip install c2pa-python``) and a PEM chain and key."""

    _ALGS: ClassVar[dict[str, str]] = {
        "es256": "ES256", "es384": "ES384", "ps256": "PS256", "ed25519": "ED25519"}

    def __init__(self, cert_chain_pem: bytes, private_key_pem: bytes, alg: str = "es256") -> None:
        try:
            import c2pa

            self._c2pa: Any = c2pa
        except ImportError as exc:
            raise ProvenanceError("C2PA signing needs the c2pa-python package") from exc
        if alg not in self._ALGS:
            raise ProvenanceError(f"unsupported C2PA signing algorithm {alg!r}")
        self._alg = getattr(self._c2pa.C2paSigningAlg, self._ALGS[alg])
        self._chain = cert_chain_pem
        self._key = private_key_pem

    @classmethod
    def from_files(cls, cert_file: Path, key_file: Path, alg: str = "es256") -> C2paSigner:
        try:
            return cls(cert_file.read_bytes(), key_file.read_bytes(), alg)
        except OSError as exc:
            raise ProvenanceError("the C2PA certificate or key file cannot be read") from exc

    def sign(self, data: bytes, media_type: str, info: LabelInfo) -> bytes:
        c2pa = self._c2pa
        parent = has_c2pa(data)
        try:
            info_struct = c2pa.C2paSignerInfo(self._alg, self._chain, self._key, None)
            with c2pa.Signer.from_info(info_struct) as signer, c2pa.Builder(
                    json.dumps(manifest_definition(info, has_parent=parent))) as builder:
                if parent:
                    builder.add_ingredient({"title": "upstream output", "label": PARENT_LABEL,
                                            "relationship": "parentOf"},
                                           media_type, io.BytesIO(data))
                dest = io.BytesIO()
                builder.sign(signer, media_type, io.BytesIO(data), dest)
                return dest.getvalue()
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"C2PA signing failed ({type(exc).__name__})") from exc


def read_gate_request_id(data: bytes) -> str | None:
    """The request id in a valid C2PA manifest this kind of gate wrote, or None.

    None when c2pa-python is not installed, the image has no manifest, its signature or
    hashes do not validate (an edited image or a forged manifest), or the active manifest
    carries no ``org.consent-gate.decision`` assertion. The caller still checks that the
    request id is one this gate decided (``Tracer``).
    """
    if not has_c2pa(data):
        return None
    try:
        import c2pa
    except ImportError:
        return None
    from gate.imaging.decode import sniff_format

    media = {"PNG": "image/png", "JPEG": "image/jpeg"}.get(sniff_format(data) or "")
    if media is None:
        return None
    try:
        with c2pa.Reader(media, io.BytesIO(data)) as reader:
            if reader.get_validation_state() not in ("Valid", "Trusted"):
                return None
            manifest = reader.get_active_manifest()
    except Exception:  # noqa: BLE001 - an unreadable manifest is simply not ours
        return None
    for assertion in (manifest or {}).get("assertions", []):
        if isinstance(assertion, dict) and assertion.get("label") == "org.consent-gate.decision":
            request_id = (assertion.get("data") or {}).get("request_id")
            return request_id if isinstance(request_id, str) else None
    return None
