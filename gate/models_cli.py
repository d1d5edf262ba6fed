"""``gate models verify`` and ``gate models fetch``: weights by sha256 manifest.

Nothing here runs at decision time: downloads happen only when a person asks for them,
with an explicit licence acceptance for insightface packs.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from gate.errors import ModelUnavailable
from gate.settings import Settings
from gate.vision import packs

MAX_DOWNLOAD_BYTES = 1 << 30


def verify_models(settings: Settings | None = None) -> dict[str, Any]:
    """Verify (and prepare) the configured detector and recognizer; raise if unusable."""
    settings = settings or Settings()
    manifest = packs.load_manifest()
    files: list[dict[str, Any]] = []
    cache = settings.resolved_model_cache()
    if settings.detector == "yunet" or settings.embedder == "sface":
        pack = manifest.packs[packs.DEFAULT_PACK]
        for entry in pack.files:
            wanted = (entry.role == "detector" and settings.detector == "yunet") or (
                entry.role == "recognizer" and settings.embedder == "sface")
            if not wanted:
                continue
            path = packs.default_file(entry.role)
            prepared = packs.prepared_default(entry.role, cache)
            files.append({"role": entry.role, "file": str(path), "sha256": entry.sha256,
                          "prepared": str(prepared), "status": "ok", "license": entry.license})
    for role, user_path, pinned in (
            ("detector", settings.scrfd_model, settings.scrfd_sha256),
            ("recognizer", settings.arcface_model, settings.arcface_sha256)):
        if user_path is None or (role == "detector" and settings.detector != "scrfd") or (
                role == "recognizer" and settings.embedder != "arcface"):
            continue
        _, digest = packs.verify_user_model(user_path, role=role, pinned_sha256=pinned,
                                            accepted_license=settings.accept_license)
        found = manifest.find_by_sha256(digest)
        files.append({"role": role, "file": str(user_path), "sha256": digest, "status": "ok",
                      "license": found[1].license if found else "user-supplied"})
    if settings.age_model == "onnx":  # every sexual-content check needs it: verify it too
        from gate.vision.age import AGE_PACK, default_age_model, manifest_entry

        entry = manifest_entry(AGE_PACK, "age")
        files.append({"role": "age", "file": str(default_age_model()), "sha256": entry.sha256,
                      "status": "ok", "license": entry.license})
    return {"detector": settings.detector, "embedder": settings.embedder,
            "age_model": settings.age_model, "files": files}


def fetch_pack(name: str, *, accept_license: str | None, dest: Path | None = None,
               url: str | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Download an insightface zip, verify each member by sha256, install it to ``dest``."""
    import httpx

    manifest = packs.load_manifest()
    pack = manifest.packs.get(name)
    if pack is None or name == packs.DEFAULT_PACK:
        raise ModelUnavailable(f"unknown pack {name!r}; known: "
                               f"{', '.join(p for p in manifest.packs if p != packs.DEFAULT_PACK)}")
    if pack.license_acceptance and accept_license != pack.license_acceptance:
        raise ModelUnavailable(
            f"{name}: {pack.license}. Re-run with --accept-license {pack.license_acceptance} "
            "to download it knowingly.")
    source = url or pack.url
    if not source:
        raise ModelUnavailable(f"{name} has no download URL; pass --url")
    target = dest or Path.home() / ".insightface" / "models" / name
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "pack.zip"
        try:
            with httpx.stream("GET", source, timeout=timeout_s, follow_redirects=True) as resp:
                resp.raise_for_status()
                size = 0
                with archive.open("wb") as fh:
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > MAX_DOWNLOAD_BYTES:
                            raise ModelUnavailable(f"{name}: download larger than 1 GiB")
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"{name}: download failed ({type(exc).__name__}); check "
                                   "the network or pass --url to a mirror") from exc
        installed = _extract_verified(archive, pack, Path(tmp) / "out")
        target.mkdir(parents=True, exist_ok=True)
        for path in installed:
            shutil.move(str(path), target / path.name)
    return {"pack": name, "dest": str(target), "files": [p.name for p in installed],
            "license_notice": f"LICENCE: {pack.license}"}


def _extract_verified(archive: Path, pack: packs.Pack, out: Path) -> list[Path]:
    out.mkdir()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ModelUnavailable("downloaded pack is not a valid zip archive") from exc
    with zf:
        members = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
        written = []
        for entry in pack.files:
            info = members.get(entry.file)
            if info is None:
                raise ModelUnavailable(f"downloaded pack lacks {entry.file}")
            path = out / entry.file  # basename only: no path traversal from the archive
            with zf.open(info) as src, path.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            packs.verify_file(path, entry.sha256, what=f"downloaded {entry.file}",
                              remedy="Retry the download or use a trusted mirror.")
            written.append(path)
    return written
