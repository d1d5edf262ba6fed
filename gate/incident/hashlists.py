"""Hash lists in the formats trust-and-safety teams exchange (ThreatExchange / HMA).

Three formats, read and written faithfully to python-threatexchange (1.2.x), which
Hasher-Matcher-Actioner (HMA) builds on:

``te-file``
    ``LocalFileSignalExchangeAPI`` (the "file" exchange, ``threatexchange/exchanges/
    impl/file_api.py``): one signal per line, ``<signal_type> <signal>``, e.g.
    ``pdq f8f8f0ce...``. When the collaboration names a signal type, a line may hold the
    bare signal. Blank lines, and lines without a signal after the type, are skipped, as
    there. This is what ``report_opinion`` appends and what HMA's file exchange reads.
``te-csv``
    ``threatexchange dataset -P --csv``: a header ``signal_type,signal_str,collab,
    category,tags``, then one row per signal and collaboration; ``category`` is a
    ``SignalOpinionCategory`` name (``POSITIVE_CLASS``, ``NEGATIVE_CLASS``,
    ``INVESTIGATION_SEED``) and ``tags`` is space-separated.
``te-simple``
    The CLI's cached ThreatExchange state, ``simple.<INDICATOR_TYPE>.te``
    (``CliIndicatorSerialization``): header-less CSV rows ``indicator,
    first_descriptor_id, added_on, labels`` (labels space-separated); HMA 1.x's
    ``HMASerialization`` adds the indicator id as the second column (5 columns). The
    indicator type (``HASH_PDQ``) comes from the file name, so rows are read as PDQ.

Only PDQ signals are kept (signal type ``pdq``, indicator type ``HASH_PDQ``); others are
counted in :attr:`HashList.skipped` and left out. Every PDQ value is validated (64 hex
characters, lowercased); a malformed line is an error naming its line number, never
silently dropped. Input size and entry count are bounded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from gate.errors import GateError
from gate.incident.pdq import InvalidHash, normalize_pdq

__all__ = [
    "FORMATS",
    "HashList",
    "HashListEntry",
    "HashListError",
    "HashListFormat",
    "read_hash_list",
    "sniff_format",
    "write_hash_list",
]

HashListFormat = Literal["te-file", "te-csv", "te-simple"]
FORMATS: Final[tuple[HashListFormat, ...]] = ("te-file", "te-csv", "te-simple")

PDQ_SIGNAL_TYPE: Final = "pdq"  # PdqSignal.get_name()
PDQ_INDICATOR_TYPE: Final = "HASH_PDQ"  # PdqSignal.INDICATOR_TYPE
CATEGORIES: Final = frozenset({"NEGATIVE_CLASS", "INVESTIGATION_SEED", "POSITIVE_CLASS"})
TE_CSV_HEADER: Final = ("signal_type", "signal_str", "collab", "category", "tags")

MAX_BYTES: Final = 256 * 1024 * 1024
MAX_ENTRIES: Final = 5_000_000


class HashListError(GateError):
    """A hash list cannot be read (format, encoding, a malformed line, too large)."""

    code = "hash_list_invalid"


@dataclass(frozen=True, slots=True)
class HashListEntry:
    """One PDQ signal with the metadata the formats carry (empty when absent)."""

    signal: str  # 64 lowercase hex characters
    collab: str = ""  # collaboration / bank / list name
    category: str = "POSITIVE_CLASS"  # SignalOpinionCategory name
    tags: tuple[str, ...] = ()
    source_id: str = ""  # te-simple: the first descriptor id
    added_on: str = ""  # te-simple: as the exporter wrote it


@dataclass(frozen=True, slots=True)
class HashList:
    """What a file held: the PDQ entries and how many other signals were left out."""

    entries: tuple[HashListEntry, ...]
    format: HashListFormat
    skipped: dict[str, int] = field(default_factory=dict)  # signal type -> count


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        text = data
        size = len(text)
    else:
        size = len(data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HashListError("the hash list is not UTF-8 text") from None
    if size > MAX_BYTES:
        raise HashListError("the hash list is too large")
    return text.removeprefix("\ufeff")


def sniff_format(data: bytes | str) -> HashListFormat:
    """``te-csv`` when the first line is its header, ``te-simple`` for other CSV rows,
    else ``te-file``."""
    first = next((line.strip() for line in _text(data).splitlines() if line.strip()), "")
    if tuple(c.strip() for c in first.split(",")) == TE_CSV_HEADER:
        return "te-csv"
    return "te-simple" if "," in first else "te-file"


def _pdq(value: str, line: int) -> str:
    try:
        return normalize_pdq(value)
    except InvalidHash:
        raise HashListError(f"line {line}: not a PDQ hash (64 hexadecimal characters)",
                            field=f"line {line}") from None


def _tags(value: str) -> tuple[str, ...]:
    return tuple(sorted({t for t in value.split(" ") if t}))


def _bounded(entries: list[HashListEntry]) -> None:
    if len(entries) >= MAX_ENTRIES:
        raise HashListError(f"the hash list has more than {MAX_ENTRIES} entries")


def read_hash_list(data: bytes | str, fmt: HashListFormat | None = None, *,
                   signal_type: str | None = None, collab: str = "") -> HashList:
    """Parse a hash list; ``fmt`` is sniffed when ``None``.

    ``signal_type`` is the ``te-file`` collaboration setting (the type of bare lines);
    ``collab`` names the list for formats that do not carry it.
    """
    text = _text(data)
    kind = fmt or sniff_format(text)
    if kind == "te-file":
        return _read_file(text, signal_type, collab)
    if kind == "te-csv":
        return _read_csv(text)
    if kind == "te-simple":
        return _read_simple(text, collab)
    raise HashListError(f"unknown hash list format {kind!r}; use one of {', '.join(FORMATS)}")


def _read_file(text: str, signal_type: str | None, collab: str) -> HashList:
    entries: list[HashListEntry] = []
    skipped: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        kind = signal_type
        signal = line
        if kind is None:
            kind, _, signal = line.partition(" ")
            signal = signal.strip()
        if not kind or not signal:
            continue
        if kind != PDQ_SIGNAL_TYPE:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        _bounded(entries)
        entries.append(HashListEntry(_pdq(signal, number), collab=collab))
    return HashList(tuple(entries), "te-file", skipped)


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error:
        raise HashListError(f"line {reader.line_num}: malformed CSV") from None


def _read_csv(text: str) -> HashList:
    entries: list[HashListEntry] = []
    skipped: dict[str, int] = {}
    rows = iter(_rows(text))
    header = next(rows, None)
    if header is None or tuple(c.strip() for c in header[1]) != TE_CSV_HEADER:
        raise HashListError("line 1: expected the header " + ",".join(TE_CSV_HEADER))
    for number, row in rows:
        if len(row) != len(TE_CSV_HEADER):
            raise HashListError(f"line {number}: expected {len(TE_CSV_HEADER)} columns")
        kind, signal, collab, category, tags = (c.strip() for c in row)
        if kind != PDQ_SIGNAL_TYPE:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        if category not in CATEGORIES:
            raise HashListError(f"line {number}: unknown category (expected one of "
                                f"{', '.join(sorted(CATEGORIES))})")
        _bounded(entries)
        entries.append(HashListEntry(_pdq(signal, number), collab=collab, category=category,
                                     tags=_tags(tags)))
    return HashList(tuple(entries), "te-csv", skipped)


def _read_simple(text: str, collab: str) -> HashList:
    entries: list[HashListEntry] = []
    for number, row in _rows(text):
        if len(row) == 4:  # CliIndicatorSerialization
            indicator, descriptor_id, added_on, labels = row
        elif len(row) == 5:  # HMASerialization: indicator id second
            indicator, _, descriptor_id, added_on, labels = row
        else:
            raise HashListError(f"line {number}: expected 4 or 5 columns")
        _bounded(entries)
        entries.append(HashListEntry(_pdq(indicator, number), collab=collab,
                                     tags=_tags(labels), source_id=descriptor_id.strip(),
                                     added_on=added_on.strip()))
    return HashList(tuple(entries), "te-simple", {})


def write_hash_list(entries: Iterable[HashListEntry], fmt: HashListFormat) -> str:
    """Serialise ``entries`` (text, ``\\n`` line ends; CSV rows end ``\\r\\n`` as Python's
    ``csv`` module, and so python-threatexchange, writes them)."""
    if fmt == "te-file":
        return "".join(f"{PDQ_SIGNAL_TYPE} {normalize_pdq(e.signal)}\n" for e in entries)
    out = io.StringIO()
    writer = csv.writer(out)
    if fmt == "te-csv":
        writer.writerow(TE_CSV_HEADER)
        for e in entries:
            writer.writerow((PDQ_SIGNAL_TYPE, normalize_pdq(e.signal), e.collab, e.category,
                             " ".join(e.tags)))
    elif fmt == "te-simple":
        for e in entries:
            descriptor = e.source_id if e.source_id.isdigit() else "0"  # read as an int
            writer.writerow((normalize_pdq(e.signal), descriptor, e.added_on,
                             " ".join(e.tags)))
    else:
        raise HashListError(f"unknown hash list format {fmt!r}; use one of "
                            f"{', '.join(FORMATS)}")
    return out.getvalue()
