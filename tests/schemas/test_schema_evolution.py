"""Schema evolution: the current schemas read data written with every released version, each change
is fully compatible, the checker tells a safe change from a breaking one, and the generated
TypedDicts match the schemas."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

import schemas.codec as codec_module
from schemas import gen_records
from schemas.catalog import Catalog, SchemaVersion, catalog, current_schema, schema_version
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec, UnknownSchemaError
from schemas.evolution import (
    IncompatibleSchemaError,
    check_backward,
    check_forward,
    check_full,
    example_records,
)
from schemas.markers import read_control
from schemas.topics import (
    ALL_TOPICS,
    CONTROL_HEADER,
    END_OF_STREAM,
    PROGRESS,
    STREAM_END_HEADER,
    STREAM_PROGRESS_HEADER,
)
from tests.schemas.samples import SAMPLES

TOPIC_OF_SCHEMA = {spec.schema: spec.name for spec in ALL_TOPICS}
RELEASED = [(sv.name, sv.version) for versions in catalog().history.values() for sv in versions]


def _released(name: str, version: int | None) -> SchemaVersion:
    return next(sv for sv in catalog().history[name] if sv.version == version)


def _single_object(schema: SchemaVersion, record: dict[str, Any]) -> bytes:
    """A value as a producer running `schema` wrote it (single-object encoding)."""
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC + schema.fingerprint)
    schemaless_writer(out, schema.parsed, record)
    return out.getvalue()


def _fields(schema: SchemaVersion) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema.schema["fields"]}


# -- the released versions -----------------------------------------------------------------------


def test_every_schema_has_released_versions_numbered_from_1() -> None:
    history = catalog().history
    assert sorted(history) == sorted(catalog().current)
    for name, versions in history.items():
        assert [sv.version for sv in versions] == list(range(1, len(versions) + 1)), name


@pytest.mark.parametrize("name", sorted(catalog().current))
def test_current_schema_is_released(name: str) -> None:
    latest = catalog().history[name][-1]
    assert latest.fingerprint == current_schema(name).fingerprint, (
        f"schemas/avro/{name}.avsc differs from its latest release {latest.origin}: a changed schema is "
        f"a new version -- add schemas/history/{name}/v{latest.version + 1 if latest.version else 1}.avsc "
        "(a copy of the new schema) so data written with it can be read back later"
    )


@pytest.mark.parametrize(("name", "version"), RELEASED)
def test_current_schema_is_fully_compatible_with_released_version(name: str, version: int) -> None:
    check_full(current_schema(name), _released(name, version))


@pytest.mark.parametrize(("name", "version"), RELEASED)
def test_current_schema_reads_data_written_with_released_version(name: str, version: int) -> None:
    old, current = _released(name, version), current_schema(name)
    old_fields, current_fields = _fields(old), _fields(current)
    samples = [{k: v for k, v in s.items() if k in old_fields} for s in SAMPLES[name]]
    codec = Codec()
    for record in samples + example_records(old):
        data = _single_object(old, record)
        if name in TOPIC_OF_SCHEMA:
            decoded = codec.decode(TOPIC_OF_SCHEMA[name], data)
        else:  # a control record's header record
            found = read_control(_control_headers(name, data))
            assert found is not None
            decoded = dict(found)
        as_written = schemaless_reader(io.BytesIO(data[10:]), old.parsed, None)  # what `old` kept of it
        assert isinstance(as_written, dict)
        for field, spec in current_fields.items():
            if field in old_fields:
                assert _holds(decoded[field], as_written[field]), field
            else:  # added since: the reader's default
                assert decoded[field] == spec["default"], field


def _holds(decoded: Any, written: Any) -> bool:
    """`decoded` equals `written` but for fields a newer reader added to nested records and maps."""
    if isinstance(written, dict) and isinstance(decoded, dict):
        return all(k in decoded and _holds(decoded[k], v) for k, v in written.items())
    if isinstance(written, list) and isinstance(decoded, list):
        return len(written) == len(decoded) and all(map(_holds, decoded, written))
    return bool(decoded == written)


def _control_headers(name: str, data: bytes) -> list[tuple[str, bytes]]:
    if name == "stream_progress":
        return [(CONTROL_HEADER, PROGRESS), (STREAM_PROGRESS_HEADER, data)]
    return [(CONTROL_HEADER, END_OF_STREAM), (STREAM_END_HEADER, data)]


# -- the checker ---------------------------------------------------------------------------------


def _variant(mutate: Callable[[dict[str, Any]], Any], name: str = "audio_frame") -> SchemaVersion:
    """The current schema with one change, as a candidate next version."""
    schema = copy.deepcopy(current_schema(name).schema)
    mutate(schema)
    return schema_version(schema, name=name, version=None, origin=f"candidate {name}")


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


SAFE_CHANGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "add a field with a default": lambda s: s["fields"].append(
        {"name": "volume_db", "type": "int", "default": 0}
    ),
    "add a nullable field defaulting to null": lambda s: s["fields"].append(
        {"name": "codec_note", "type": ["null", "string"], "default": None}
    ),
    "remove a field that has a default": lambda s: s["fields"].remove(_field(s, "gap")),
    "add an enum symbol (the enum has a default: old readers read UNKNOWN)": lambda s: _field(
        s, "stream_kind"
    )["type"]["symbols"].append("SPATIAL_AUDIO"),
    "add a field with a default to a nested record": lambda s: _field(s, "media")["type"]["fields"].append(
        {"name": "bit_depth", "type": "int", "default": 16}
    ),
    "change docs": lambda s: s.update(doc="A new description."),
}

BREAKING_CHANGES: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "add a field without a default": (
        "backward",
        lambda s: s["fields"].append({"name": "volume_db", "type": "int"}),
    ),
    "remove a field without a default": ("forward", lambda s: s["fields"].remove(_field(s, "timestamp_ms"))),
    "change a field's type": ("backward", lambda s: _field(s, "timestamp_ms").update(type="string")),
    "narrow long to int": ("backward", lambda s: _field(s, "seq").update(type="int")),
    "widen int to long (old readers cannot)": (
        "forward",
        lambda s: _field(s, "media")["type"]["fields"][1].update(type="long"),
    ),
    "make a nullable field required": (
        "backward",
        lambda s: _field(s, "channel_id").update(type="string", default=""),
    ),
    "rename an enum type": ("backward", lambda s: _field(s, "stream_kind")["type"].update(name="Kind")),
    "rename the record": ("backward", lambda s: s.update(name="AudioPacket")),
}


@pytest.mark.parametrize("change", sorted(SAFE_CHANGES))
def test_checker_accepts_a_compatible_change(change: str) -> None:
    check_full(_variant(SAFE_CHANGES[change]), current_schema("audio_frame"))


@pytest.mark.parametrize("change", sorted(BREAKING_CHANGES))
def test_checker_rejects_an_incompatible_change(change: str) -> None:
    direction, mutate = BREAKING_CHANGES[change]
    candidate, current = _variant(mutate), current_schema("audio_frame")
    with pytest.raises(IncompatibleSchemaError) as info:
        check_full(candidate, current)
    assert info.value.direction == direction
    assert "candidate audio_frame" in str(info.value) and "schemas/avro/audio_frame.avsc" in str(info.value)


def test_an_enum_without_a_default_cannot_grow() -> None:
    """Why every enum of the contract has a default symbol: without one, a new symbol breaks
    old readers (forward); with one (positive control) it is a compatible change."""

    def without_default(s: dict[str, Any]) -> None:
        _field(s, "stream_kind")["type"].pop("default")

    old = _variant(without_default)
    grown = _variant(
        lambda s: (without_default(s), _field(s, "stream_kind")["type"]["symbols"].append("NEW"))
    )
    with pytest.raises(IncompatibleSchemaError) as info:
        check_full(grown, old)
    assert info.value.direction == "forward"
    grown_with_default = _variant(lambda s: _field(s, "stream_kind")["type"]["symbols"].append("NEW"))
    check_full(grown_with_default, current_schema("audio_frame"))


def test_backward_and_forward_are_checked_separately() -> None:
    removed = _variant(lambda s: s["fields"].remove(_field(s, "timestamp_ms")))
    check_backward(removed, current_schema("audio_frame"))  # new readers ignore the old field
    with pytest.raises(IncompatibleSchemaError, match="No default value for field timestamp_ms"):
        check_forward(removed, current_schema("audio_frame"))  # old readers need it


def test_example_records_use_every_enum_symbol_and_union_branch() -> None:
    records = example_records(current_schema("audio_frame"))
    assert {r["stream_kind"] for r in records} == {
        "UNKNOWN",
        "AUDIO",
        "VIDEO",
        "DESKSHARE",
        "TRANSCRIPT",
        "CHAT",
        "EVENT",
    }
    assert {type(r["participant_name"]) for r in records} == {type(None), str}


# -- a future release, end to end through the codec ----------------------------------------------


def test_a_future_version_reads_v1_data_and_unreleased_data_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Release a v2 of raw_audio_frame that adds a field with a default and drops one that had a
    default: the codec of v2 decodes values written by a v1 producer. Without v1 in the history,
    those values would be an unknown fingerprint -- why every release is kept in schemas/history."""
    v1 = current_schema("raw_audio_frame")
    v2_schema = copy.deepcopy(v1.schema)
    v2_schema["fields"].append({"name": "volume_db", "type": "int", "default": -20})
    v2_schema["fields"].remove(_field(v2_schema, "participant_name"))
    v2_schema["fields"].remove(_field(v2_schema, "payload"))
    v2_schema["fields"].append({"name": "payload", "type": "bytes", "default": "\u00ff"})
    v2 = schema_version(v2_schema, name="raw_audio_frame", version=None, origin="v2 (test)")
    check_full(v2, replace(v1, version=1))

    base = catalog()
    future = Catalog(
        current={**base.current, "raw_audio_frame": v2},
        history={**base.history, "raw_audio_frame": (replace(v1, version=1), replace(v2, version=2))},
        by_fingerprint={**base.by_fingerprint, v2.fingerprint: v2},
    )
    monkeypatch.setattr(codec_module, "catalog", lambda: future)
    monkeypatch.setattr(codec_module, "current_schema", lambda name: future.current[name])

    frame = SAMPLES["raw_audio_frame"][0]
    decoded = Codec().decode("rtms.raw.audio", _single_object(v1, frame))
    assert decoded["volume_db"] == -20 and "participant_name" not in decoded
    assert decoded["payload"] == frame["payload"] and decoded["timestamp_ms"] == frame["timestamp_ms"]

    # A v2 reader fills a field that old data lacks with the default, as bytes.
    v0_schema = copy.deepcopy(v1.schema)
    v0_schema["fields"].remove(_field(v0_schema, "payload"))
    v0 = schema_version(v0_schema, name="raw_audio_frame", version=None, origin="v0 (test)")
    future_with_v0 = replace(future, by_fingerprint={**future.by_fingerprint, v0.fingerprint: v0})
    monkeypatch.setattr(codec_module, "catalog", lambda: future_with_v0)
    from_v0 = {k: v for k, v in frame.items() if k != "payload"}
    assert Codec().decode("rtms.raw.audio", _single_object(v0, from_v0))["payload"] == b"\xff"

    unreleased = replace(
        future, by_fingerprint={k: v for k, v in future.by_fingerprint.items() if k != v1.fingerprint}
    )
    monkeypatch.setattr(codec_module, "catalog", lambda: unreleased)
    with pytest.raises(UnknownSchemaError, match="schemas/history/raw_audio_frame"):
        Codec().decode("rtms.raw.audio", _single_object(v1, frame))


# -- generated record types ----------------------------------------------------------------------


def test_generated_records_module_is_up_to_date() -> None:
    assert gen_records.target().read_text(encoding="utf-8") == gen_records.render(), (
        "schemas/records.py is out of date: run `python -m schemas.gen_records`"
    )


def test_generated_records_cover_every_schema() -> None:
    from schemas.records import BY_SCHEMA

    assert sorted(BY_SCHEMA) == sorted(catalog().current)
    for name, typed in BY_SCHEMA.items():
        assert typed.__name__ == current_schema(name).full_name.rpartition(".")[2]
        assert set(typed.__annotations__) == set(_fields(current_schema(name)))
        assert typed.__required_keys__ == {  # type: ignore[attr-defined]
            f["name"] for f in current_schema(name).schema["fields"] if "default" not in f
        }
