"""Implicit labels in PNG and JPEG metadata; an existing C2PA manifest is never stripped;
optional C2PA signing with a self-made test certificate (offline)."""

from __future__ import annotations

import datetime
import importlib
import io
import json
import struct

import pytest
from PIL import Image

from gate.errors import InvalidImage
from gate.marking.labels import (
    DIGITAL_SOURCE_TYPE,
    LabelInfo,
    has_c2pa,
    jpeg_segments,
    label_image,
    png_chunk,
    png_chunks,
)
from gate.marking.provenance import C2paSigner

INFO = LabelInfo("Studio Provider", "req_abc", ("gr_1", "gr_2"), "2026-11-25.1")
JUMBF = b"\x00\x00\x00\x20jumb\x00\x00\x00\x18jumdc2pa\x00\x11\x00\x10\x80\x00\xaa\x008\x9bq"


def _png(**text: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _with_cabx(png: bytes) -> bytes:
    chunks = list(png_chunks(png))
    cabx = png_chunk(b"caBX", JUMBF)
    return b"\x89PNG\r\n\x1a\n" + chunks[0][1] + cabx + b"".join(c for _, c in chunks[1:])


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").tobytes()


def test_png_label_chunks_and_pixels_untouched() -> None:
    src = _png(parameters="steps: 20")
    out, media = label_image(src, INFO)
    assert media == "image/png"
    texts = {c[8:-4].split(b"\x00", 1)[0]: c[8:-4] for k, c in png_chunks(out)
             if k in (b"tEXt", b"iTXt")}
    aigc = json.loads(texts[b"AIGC"].split(b"\x00", 1)[1])
    assert aigc == {"Label": "1", "ContentProducer": "Studio Provider", "ProduceID": "req_abc",
                    "ReservedCode1": "", "ContentPropagator": "", "PropagateID": "",
                    "ReservedCode2": ""}
    record = json.loads(texts[b"consent-gate"].split(b"\x00", 1)[1])
    assert record["grant_ids"] == ["gr_1", "gr_2"]
    xmp = texts[b"XML:com.adobe.xmp"].decode()
    assert DIGITAL_SOURCE_TYPE in xmp and "http://www.tc260.org.cn/ns/AIGC/1.0/" in xmp
    assert b"parameters" in texts  # other metadata kept
    assert _pixels(out) == _pixels(src)
    with Image.open(io.BytesIO(out)) as img:  # Pillow reads the chunks back
        assert json.loads(img.info["AIGC"])["ProduceID"] == "req_abc"


def test_relabelling_replaces_our_chunks_once() -> None:
    once, _ = label_image(_png(), INFO)
    twice, _ = label_image(once, LabelInfo("Other", "req_2"))
    kinds = [k for k, _ in png_chunks(twice)]
    assert kinds.count(b"iTXt") == 1 and kinds.count(b"tEXt") == 2
    assert b"req_2" in twice and b"req_abc" not in twice


def test_png_c2pa_manifest_bytes_are_preserved() -> None:
    src = _with_cabx(_png())
    assert has_c2pa(src)
    out, _ = label_image(src, INFO)
    cabx = [c for k, c in png_chunks(out) if k == b"caBX"]
    assert cabx == [png_chunk(b"caBX", JUMBF)]
    assert out.index(b"caBX") < out.index(b"IDAT")


def test_jpeg_gets_an_xmp_segment_and_keeps_app11() -> None:
    base = _jpeg()
    app11 = b"\xff\xeb" + struct.pack(">H", len(JUMBF) + 2) + JUMBF
    jfif = jpeg_segments(base)[0][0][1]
    src = base[:2] + jfif + app11 + base[2 + len(jfif):]
    assert has_c2pa(src)
    out, media = label_image(src, INFO)
    assert media == "image/jpeg"
    segments, _ = jpeg_segments(out)
    markers = [m for m, _ in segments]
    assert markers[:2] == [0xE0, 0xE1]  # JFIF, then our XMP
    assert app11 in out
    xmp = dict(segments)[0xE1]
    assert xmp[4:33] == b"http://ns.adobe.com/xap/1.0/\x00" and b"trainedAlgorithmicMedia" in xmp
    assert _pixels(out) == _pixels(src)
    again, _ = label_image(out, INFO)
    assert [m for m, _ in jpeg_segments(again)[0]].count(0xE1) == 1


def test_webp_outputs_become_labelled_png_and_garbage_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "WEBP", lossless=True)
    out, media = label_image(buf.getvalue(), INFO)
    assert media == "image/png" and b"AIGC" in out
    with pytest.raises(InvalidImage):
        label_image(b"not an image", INFO)
    with pytest.raises(InvalidImage):
        label_image(_png()[:60], INFO)


# --------------------------------------------------------------------------- C2PA


def _test_certificates() -> tuple[bytes, bytes]:
    """A throwaway CA and an end-entity signing certificate (ES256), made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "consent-gate tests")])

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Test CA")).issuer_name(name("Test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("Signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + \
        ca.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return chain, pem


@pytest.fixture(scope="module")
def signer() -> C2paSigner:
    pytest.importorskip("c2pa")
    return C2paSigner(*_test_certificates())


def _manifest(data: bytes, media: str) -> dict[str, object]:
    c2pa = importlib.import_module("c2pa")
    with c2pa.Reader(media, io.BytesIO(data)) as reader:
        return json.loads(reader.json())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_c2pa_manifest_is_signed_offline_and_carries_the_upstream_manifest(
        signer: C2paSigner) -> None:
    labelled, media = label_image(_png(), INFO)
    signed = signer.sign(labelled, media, INFO)
    store = _manifest(signed, media)
    assert store["validation_state"] == "Valid"  # untrusted test CA, but intact
    active = store["manifests"][store["active_manifest"]]  # type: ignore[index]
    assert {a["label"] for a in active["assertions"]} >= {"org.consent-gate.decision"}
    assert b"AIGC" in signed  # the label survives signing
    # An upstream output that already has a manifest: it lives on as the parent.
    relabelled, _ = label_image(signed, LabelInfo("p", "req_2"))
    resigned = signer.sign(relabelled, media, LabelInfo("p", "req_2"))
    store = _manifest(resigned, media)
    assert store["validation_state"] == "Valid"
    assert len(store["manifests"]) == 2  # type: ignore[arg-type]
    active = store["manifests"][store["active_manifest"]]  # type: ignore[index]
    assert active["ingredients"][0]["relationship"] == "parentOf"
