"""docs/CONTRACT.md: generated from the schemas and the topic table, up to date, and complete (every
topic with its key, partitioning, cleanup policy and retention; every field of every schema with its
type, unit and default; every named type once; markers, gaps, wire formats, a consumer example)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from rtmsflow.settings import Settings
from schemas import contract_doc
from schemas.catalog import catalog, current_schema
from schemas.topics import ALL_TOPICS, CONTROL_HEADER, SESSIONS, STREAM_END_HEADER, TRANSCRIPT

DOC = contract_doc.render(Settings().partitions, Settings().retention_days)  # the runtime's defaults


def _sections(text: str) -> dict[str, str]:
    """The text under each `##`/`###` heading, by heading, up to the next heading."""
    out: dict[str, str] = {}
    parts = re.split(r"^#{2,3} (.+)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        assert heading not in out, f"heading {heading!r} twice"
        out[heading] = body
    return out


SECTIONS = _sections(DOC)


def _records(t: Any) -> list[dict[str, Any]]:
    """Every record schema inside a type, outermost first."""
    if isinstance(t, list):
        return [r for branch in t for r in _records(branch)]
    if not isinstance(t, dict):
        return []
    if t["type"] == "record":
        return [t, *(r for f in t["fields"] for r in _records(f["type"]))]
    if t["type"] == "array":
        return _records(t["items"])
    if t["type"] == "map":
        return _records(t["values"])
    return []


def _field(record: str, name: str) -> dict[str, Any]:
    for sv in catalog().current.values():
        for r in _records(sv.schema):
            if r["name"] == record:
                return next(f for f in r["fields"] if f["name"] == name)
    raise KeyError(f"{record}.{name}")


def test_contract_document_is_up_to_date() -> None:
    assert contract_doc.target().read_text(encoding="utf-8") == DOC, (
        "docs/CONTRACT.md is out of date: run `python -m schemas.contract_doc`"
    )


def test_check_exits_1_on_a_stale_document_and_0_on_a_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "CONTRACT.md"
    monkeypatch.setattr(contract_doc, "target", lambda: path)
    path.write_text(DOC.replace("rtms.transcript", "rtms.transcripts", 1), encoding="utf-8")
    assert contract_doc.main(["--check"]) == 1
    assert contract_doc.main([]) == 0  # rewrites it...
    assert path.read_text(encoding="utf-8") == DOC
    assert contract_doc.main(["--check"]) == 0  # ...and then it is current


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda s: s.name)
def test_every_topic_has_a_section_with_key_partitioning_cleanup_and_retention(spec: Any) -> None:
    section = SECTIONS[spec.name]
    sv = current_schema(spec.schema)
    assert f"`{sv.full_name}`" in section and f"`{spec.name}-value`" in section
    assert "**Key:**" in section and "by meeting UUID (murmur2)" in section
    policy = spec.configs_for(30)["cleanup.policy"]
    assert f"**Cleanup policy:** {policy}" in section
    if policy == "delete":
        assert "**keeps:** 30 days" in section
    else:
        assert "**keeps:** the latest record per key, for ever" in section
    assert f"[{spec.name}](#{spec.name.replace('.', '')})" in SECTIONS["Topics"]  # and a row in the table


def test_the_sessions_key_is_the_stream_key_and_the_others_the_meeting() -> None:
    assert "**Key:** `<meeting_uuid>|<rtms_stream_id>`" in SECTIONS[SESSIONS.name]
    assert "`<meeting_uuid>\\|<rtms_stream_id>`" in SECTIONS["Topics"]  # escaped inside the table
    assert "**Key:** the meeting UUID;" in SECTIONS[TRANSCRIPT.name]


@pytest.mark.parametrize("name", sorted(catalog().current))
def test_every_field_of_every_schema_appears_with_its_type_and_default(name: str) -> None:
    sv = current_schema(name)
    for record in _records(sv.schema):
        short = record["name"].rpartition(".")[2]
        heading = (
            next((s.name for s in ALL_TOPICS if s.schema == name), short) if record is sv.schema else short
        )
        section = SECTIONS[heading]
        for f in record["fields"]:
            row = next((line for line in section.splitlines() if line.startswith(f"| `{f['name']}` |")), None)
            assert row is not None, f"{heading}: no row for field {f['name']}"
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert cells[1] == contract_doc._type(f["type"])
            assert cells[3] == (
                "required" if "default" not in f else f"`{json.dumps(f['default'], ensure_ascii=False)}`"
            )
            assert " ".join(f.get("doc", "").split()) in row.replace("\\|", "|")


def test_every_named_type_is_defined_once_and_every_enum_lists_its_symbols_and_default() -> None:
    named = contract_doc.named_types()
    assert {"StreamKind", "GapReason", "Gap", "AudioParams", "VideoParams", "Participant", "EndKind"} <= set(
        named
    )
    for name, entry in named.items():
        assert DOC.count(f"\n### {name}\n") == 1, name
        if entry.schema["type"] == "enum":
            section = SECTIONS[name]
            assert "symbols: " + ", ".join(f"`{s}`" for s in entry.schema["symbols"]) in section
            assert f"`{entry.schema['default']}`" in section


@pytest.mark.parametrize(
    ("record", "field", "unit"),
    [
        ("TranscriptUtterance", "start_ms", "ms since the epoch (UTC)"),  # timestamp-millis
        ("StreamEnd", "last_timestamp_ms", "ms since the epoch (UTC)"),  # nullable timestamp-millis
        ("Gap", "length_ms", "ms"),  # a _ms name without a logical type: a length
        ("LateFrame", "lateness_ms", "ms"),
        ("AudioParams", "sample_rate", "Hz"),  # from the doc
        ("VideoParams", "width", "pixels"),
        ("VideoParams", "fps", "frames/s"),
        ("AudioFrame", "payload", ""),  # positive control: no unit where none is said
        ("AudioFrame", "seq", ""),
    ],
)
def test_units_come_from_logical_types_names_and_docs(record: str, field: str, unit: str) -> None:
    assert contract_doc.unit_of(_field(record, field)) == unit


def test_marker_and_gap_semantics_are_explained_with_the_stream_end_fields() -> None:
    markers = SECTIONS["End-of-stream markers"]
    assert f"`{CONTROL_HEADER}` = `end_of_stream`" in markers and f"`{STREAM_END_HEADER}`" in markers
    assert "**value is null**" in markers and "repeated marker is a no-op" in markers
    assert "STOPPED" in markers and "UNEXPECTED" in markers and "`complete`" in markers
    for f in current_schema("stream_end").schema["fields"]:
        assert f"| `{f['name']}` |" in SECTIONS["StreamEnd"]
    gaps = " ".join(SECTIONS["Gap records"].split())
    assert "`gap` non-null" in gaps and "empty `payload`" in gaps and "`timestamp_ms = gap.start_ms`" in gaps
    for spec in ALL_TOPICS:  # the topics with gap records, and only those, link to the section
        has_gap = any(f["name"] == "gap" for f in current_schema(spec.schema).schema["fields"])
        assert ("[gap records](#gap-records)" in SECTIONS[spec.name]) == has_gap, spec.name


def test_wire_formats_name_both_framings() -> None:
    wire = SECTIONS["Wire formats"]
    assert "`00 | schema id (4 bytes, big-endian) | Avro binary`" in wire
    assert "`C3 01 | CRC-64-AVRO fingerprint" in wire and "`<topic>-value`" in wire


def test_consumer_example_is_python_that_skips_markers_and_prints_utterances() -> None:
    section = SECTIONS[f"Reading `{TRANSCRIPT.name}` in Python"]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    tree = ast.parse(code)  # valid Python
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert {"DeserializingConsumer", "SchemaRegistryClient", "AvroDeserializer"} <= imported
    assert f'consumer.subscribe(["{TRANSCRIPT.name}"])' in code
    assert "msg.value() is None" in code and 'u["text"]' in code
    assert len(code.splitlines()) <= 16


def test_settings_shape_the_document() -> None:
    custom = " ".join(contract_doc.render(partitions=6, retention_days=90).split())
    assert "**keeps:** 90 days" in custom and "**keeps:** 30 days" not in custom
    assert "(`RTMSFLOW_PARTITIONS`, default 6)" in custom
    default = " ".join(DOC.split())  # positive control: the settings' defaults
    assert "**keeps:** 30 days" in default and "(`RTMSFLOW_PARTITIONS`, default 24)" in default
