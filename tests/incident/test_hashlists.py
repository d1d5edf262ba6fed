"""Hash lists: samples written the way python-threatexchange writes them, read back.

The samples follow python-threatexchange 1.2.x: ``LocalFileSignalExchangeAPI`` (file
exchange: ``<signal_type> <signal>`` lines, ``report_opinion`` appends ``pdq <hash>``),
``threatexchange dataset -P --csv`` (``csv.DictWriter`` with the header
``signal_type,signal_str,collab,category,tags``) and ``CliIndicatorSerialization`` /
``HMASerialization`` (``simple.HASH_PDQ.te``: header-less CSV rows).
"""

from __future__ import annotations

import csv
import io

import pytest

from gate.incident.hashlists import (
    HashListEntry,
    HashListError,
    read_hash_list,
    sniff_format,
    write_hash_list,
)

# PDQ hashes from python-threatexchange's PdqSignal.get_examples() (bridge-mods images)
H1 = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
H2 = "d8f8f0cec0f4a84f8e370a22038f67f0b36a2ed597231e1d72e6b39c4a9c9b22"
H3 = "e64cc9d91c623882f8d1f1d9a398e78c9f199b3bd83924f2b7e11e0bf861b064"

TE_FILE = f"""pdq {H1}
pdq {H2.upper()}

video_md5 d41d8cd98f00b204e9800998ecf8427e
pdq
pdq {H3}
"""


def _dataset_csv() -> str:
    """What ``threatexchange dataset -P --csv`` prints (csv.DictWriter, \\r\\n rows)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["signal_type", "signal_str", "collab", "category", "tags"])
    writer.writeheader()
    writer.writerow({"signal_type": "pdq", "signal_str": H1, "collab": "NCII shared",
                     "category": "POSITIVE_CLASS", "tags": "ncii takedown"})
    writer.writerow({"signal_type": "video_md5", "signal_str": "d41d8cd98f00b204e9800998ecf8427e",
                     "collab": "NCII shared", "category": "POSITIVE_CLASS", "tags": ""})
    writer.writerow({"signal_type": "pdq", "signal_str": H2, "collab": "Sample, with comma",
                     "category": "INVESTIGATION_SEED", "tags": ""})
    return out.getvalue()


def test_reads_the_file_exchange_format() -> None:
    result = read_hash_list(TE_FILE.encode(), collab="partner")
    assert result.format == "te-file"
    assert [e.signal for e in result.entries] == [H1, H2, H3]
    assert all(e.collab == "partner" for e in result.entries)
    assert result.skipped == {"video_md5": 1}


def test_file_exchange_bare_lines_with_a_configured_signal_type() -> None:
    result = read_hash_list(f"{H1}\n{H2}\n", "te-file", signal_type="pdq")
    assert [e.signal for e in result.entries] == [H1, H2]
    # without the setting, a bare line has a type and no signal: skipped, as upstream
    assert read_hash_list(f"{H1}\n", "te-file").entries == ()


def test_reads_the_dataset_csv_format() -> None:
    result = read_hash_list(_dataset_csv())
    assert result.format == "te-csv"
    assert result.entries == (
        HashListEntry(H1, collab="NCII shared", tags=("ncii", "takedown")),
        HashListEntry(H2, collab="Sample, with comma", category="INVESTIGATION_SEED"))
    assert result.skipped == {"video_md5": 1}


def test_reads_cli_and_hma_simple_state() -> None:
    cli_row = f"{H1},1234567890,2021-03-04T05:06:07+0000,media_type_photo ncii\r\n"
    hma_row = f"{H2},987654321,1234567890,2021-03-04T05:06:07+0000,\r\n"
    result = read_hash_list(cli_row + hma_row, collab="te")
    assert result.format == "te-simple"
    assert result.entries == (
        HashListEntry(H1, collab="te", tags=("media_type_photo", "ncii"),
                      source_id="1234567890", added_on="2021-03-04T05:06:07+0000"),
        HashListEntry(H2, collab="te", source_id="1234567890",
                      added_on="2021-03-04T05:06:07+0000"))


@pytest.mark.parametrize("fmt", ["te-file", "te-csv", "te-simple"])
def test_round_trip(fmt: str) -> None:
    entries = (HashListEntry(H1, collab="a", tags=("x", "y"), source_id="7", added_on="t"),
               HashListEntry(H3, collab="a", category="POSITIVE_CLASS"))
    text = write_hash_list(entries, fmt)  # type: ignore[arg-type]
    assert sniff_format(text) == fmt
    back = read_hash_list(text, collab="a").entries
    assert [e.signal for e in back] == [H1, H3]
    if fmt != "te-file":
        assert back[0].tags == ("x", "y")


def test_written_csv_is_what_threatexchange_reads() -> None:
    text = write_hash_list([HashListEntry(H1, collab="c", tags=("t",))], "te-csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [{"signal_type": "pdq", "signal_str": H1, "collab": "c",
                     "category": "POSITIVE_CLASS", "tags": "t"}]
    simple = write_hash_list([HashListEntry(H1, source_id="not-a-number")], "te-simple")
    row = next(csv.reader(io.StringIO(simple)))
    assert int(row[1]) == 0  # SimpleDescriptorRollup.from_row reads it with int()
    assert write_hash_list([HashListEntry(H1)], "te-file") == f"pdq {H1}\n"


@pytest.mark.parametrize(("data", "fmt", "message"), [
    ("pdq 1234\n", None, "line 1: not a PDQ hash"),
    (f"pdq {H1}\npdq {H1[:-1]}z\n", None, "line 2: not a PDQ hash"),
    ("signal_type,signal_str,collab,category,tags\npdq,x,c,POSITIVE_CLASS,\n", None,
     "line 2: not a PDQ hash"),
    (f"signal_type,signal_str,collab,category,tags\npdq,{H1},c,MAYBE,\n", None,
     "line 2: unknown category"),
    (f"signal_type,signal_str,collab,category,tags\npdq,{H1}\n", None,
     "line 2: expected 5 columns"),
    (f"pdq,{H1}\n", "te-csv", "line 1: expected the header"),
    (f"{H1},1,2\n", None, "line 1: expected 4 or 5 columns"),
    (b"pdq \xff\xfe\n", None, "not UTF-8"),
    ("", "te-xml", "unknown hash list format"),
])
def test_malformed_lists_name_the_line(data: str | bytes, fmt: str | None,
                                       message: str) -> None:
    with pytest.raises(HashListError, match=message) as caught:
        read_hash_list(data, fmt)  # type: ignore[arg-type]
    assert caught.value.code == "hash_list_invalid"


def test_utf8_bom_and_crlf_are_accepted() -> None:
    data = ("\ufeff" + _dataset_csv()).encode("utf-8")
    assert len(read_hash_list(data).entries) == 2
    assert len(read_hash_list(f"pdq {H1}\r\npdq {H2}\r\n").entries) == 2


def test_unknown_output_format_is_refused() -> None:
    with pytest.raises(HashListError, match="unknown hash list format"):
        write_hash_list([], "te-xml")  # type: ignore[arg-type]
