"""The codec: both wire formats round-trip every schema; bad bytes and bad records give typed errors
that name the topic and the reason; fingerprints of released schemas never change; the Confluent
framing works against a real schema registry (Apicurio, started by the session fixture)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint

import schemas.codec as codec_module
from rtmsflow.registry import LocalRegistry
from schemas.catalog import catalog, current_schema, schema_names, schema_version
from schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    Codec,
    DecodeError,
    EncodeError,
    NotPreparedError,
    RegistryError,
    UnknownSchemaError,
)
from schemas.evolution import example_records
from schemas.topics import ALL_TOPICS, AUDIO, VIDEO
from tests.schemas.samples import SAMPLES

TOPIC_OF_SCHEMA = {spec.schema: spec.name for spec in ALL_TOPICS}
HEADER_SCHEMAS = {"stream_end", "stream_progress"}  # values of control records' headers, not of a topic

# CRC-64-AVRO fingerprints of the released (history) versions, as written in single-object encoding
# (little-endian). Apache Avro (Java, SchemaNormalization.parsingFingerprint64) computes the same ones
# in test_apache_avro_java_reads_and_writes_our_single_object_encoding. A released version's
# fingerprint must never change: data on the topics carries it. A new version is a new file
# schemas/history/<name>/v<N+1>.avsc and a new line here. (Contract v2 restarted history at v1.)
RELEASED_FINGERPRINTS = {
    ("audio_frame", 1): "ff108be9fa262fbb",
    ("chat_message", 1): "967700cb89b205cc",
    ("raw_chat_message", 1): "4226059d8bdb95ac",
    ("dead_letter", 1): "fd5262b6bec07383",
    ("late_frame", 1): "05d45ca5d3b06f50",
    ("meeting_event", 1): "e552e6a4903dae14",
    ("meeting_index", 1): "1dfefc98688c3c19",
    ("processor_state", 1): "510cae2d61625810",
    ("raw_audio_frame", 1): "dc3152fb2e373218",
    ("raw_event", 1): "de63934eb065d546",
    ("raw_transcript_frame", 1): "1c80a0b0457a3db1",
    ("raw_video_frame", 1): "0f6063861f7a8a6b",
    ("session_event", 1): "5aac45286428b8b3",
    ("stream_end", 1): "e82c07507c580e72",
    ("transcript_utterance", 1): "fa97156c28bd1c41",
    ("video_frame", 1): "4c9e92f6f24e29b0",
    ("processor_state", 2): "c591113b35ea3bc2",
    ("raw_video_frame", 2): "6ee8510f81355684",
    ("session_event", 2): "b3ab7a740f71a698",
    ("stream_progress", 1): "a161673437067371",
    ("video_frame", 2): "b8aa16ad2e601d1f",
}


def _expected(record: dict[str, Any], decoded: dict[str, Any]) -> None:
    """Every field given comes back unchanged (nested records: the given sub-fields)."""
    for key, value in record.items():
        if isinstance(value, dict) and key == "media":
            assert {k: decoded[key][k] for k in value} == value
        else:
            assert decoded[key] == value, key


def _all_records(name: str) -> list[dict[str, Any]]:
    return SAMPLES[name] + example_records(current_schema(name))


# -- single-object encoding ----------------------------------------------------------------------


def test_every_schema_has_samples_and_a_topic() -> None:
    assert sorted(SAMPLES) == sorted(schema_names()) == sorted({*TOPIC_OF_SCHEMA, *HEADER_SCHEMAS})


@pytest.mark.parametrize("name", sorted(TOPIC_OF_SCHEMA))
def test_single_object_round_trip(name: str) -> None:
    codec, topic = Codec(), TOPIC_OF_SCHEMA[name]
    for record in _all_records(name):
        data = codec.encode(topic, record)
        assert data[:2] == SINGLE_OBJECT_MAGIC
        assert data[2:10] == current_schema(name).fingerprint
        decoded = codec.decode(topic, data)
        _expected(record, decoded)
        assert set(decoded) == {f["name"] for f in current_schema(name).schema["fields"]}


def test_times_decode_as_integer_ms_though_the_contract_says_timestamp_millis() -> None:
    """Our stages read timestamp-millis fields as int ms (no datetime per record); the schema data
    teams get (and the registry) keeps the logical type."""
    decoded = Codec().decode(
        "rtms.raw.audio", Codec().encode("rtms.raw.audio", SAMPLES["raw_audio_frame"][0])
    )
    assert (
        type(decoded["timestamp_ms"]) is int
        and decoded["timestamp_ms"] == SAMPLES["raw_audio_frame"][0]["timestamp_ms"]
    )
    fields = {f["name"]: f["type"] for f in current_schema("raw_audio_frame").schema["fields"]}
    assert fields["timestamp_ms"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_module_level_functions_use_the_default_codec() -> None:
    record = SAMPLES["session_event"][0]
    data = codec_module.encode("rtms.sessions", record)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert codec_module.decode("rtms.sessions", data)["meeting_uuid"] == record["meeting_uuid"]
    assert codec_module.default_codec() is codec_module.default_codec()


def test_topic_prefix_maps_to_the_base_topics_schema() -> None:
    codec = Codec(prefix="t0123.")
    data = codec.encode("t0123.rtms.audio", SAMPLES["audio_frame"][0])
    assert codec.decode("t0123.rtms.audio", data)["seq"] == 41
    with pytest.raises(KeyError, match="unknown topic"):
        codec.encode("rtms.nope", {})


def test_released_fingerprints_never_change() -> None:
    released = {(sv.name, sv.version): sv.fingerprint.hex() for h in catalog().history.values() for sv in h}
    assert released == RELEASED_FINGERPRINTS


def test_fingerprint_byte_order_follows_the_avro_spec() -> None:
    # Avro spec test vector: CRC-64-AVRO of "null" is 0x63dd24e7cc258f8a, written little-endian.
    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_fingerprint_ignores_docs_and_formatting() -> None:
    current = current_schema("audio_frame")
    stripped = json.loads(current.json, object_hook=lambda d: {k: v for k, v in d.items() if k != "doc"})
    again = schema_version(json.dumps(stripped, indent=7), name="audio_frame", version=None, origin="test")
    assert again.fingerprint == current.fingerprint


_JAVA_INTEROP = """
import java.nio.ByteBuffer;
import java.nio.file.*;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.*;
import org.apache.avro.message.*;

public class Interop {
  public static void main(String[] args) throws Exception {
    Schema schema = new Schema.Parser().parse(new String(Files.readAllBytes(Paths.get(args[0]))));
    GenericRecord record = new BinaryMessageDecoder<GenericRecord>(GenericData.get(), schema)
        .decode(Files.readAllBytes(Paths.get(args[1])));
    record.put("seq", ((Long) record.get("seq")) + 1000);
    ByteBuffer out = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(record);
    byte[] bytes = new byte[out.remaining()];
    out.get(bytes);
    Files.write(Paths.get(args[2]), bytes);
    for (int i = 3; i < args.length; i++) {  // the fingerprint of every schema file given after
      Schema s = new Schema.Parser().parse(new String(Files.readAllBytes(Paths.get(args[i]))));
      long fp = SchemaNormalization.parsingFingerprint64(s);
      System.out.println(args[i] + " " + String.format("%016x", Long.reverseBytes(fp)));
    }
  }
}
"""


def test_apache_avro_java_reads_and_writes_our_single_object_encoding(tmp_path: Path) -> None:
    """Not only fastavro agreeing with itself: Apache Avro 1.12 (Java, from the registry's jars)
    decodes our bytes with BinaryMessageDecoder, and we decode what its BinaryMessageEncoder wrote."""
    lib = LocalRegistry().fetch() / "lib"
    assert list(lib.glob("org.apache.avro.avro-*.jar")), f"no Avro jar in {lib}"
    (tmp_path / "Interop.java").write_text(_JAVA_INTEROP)
    record = SAMPLES["audio_frame"][0]
    (tmp_path / "ours.bin").write_bytes(Codec().encode("rtms.audio", record))
    released = []
    for (name, version), _ in sorted(RELEASED_FINGERPRINTS.items()):
        avsc = resources.files("schemas") / "history" / name / f"v{version}.avsc"
        (tmp_path / f"{name}.v{version}.avsc").write_text(avsc.read_text())
        released.append(f"{name}.v{version}.avsc")
    avsc = resources.files("schemas") / "avro" / "audio_frame.avsc"
    (tmp_path / "audio_frame.avsc").write_text(avsc.read_text())
    result = subprocess.run(
        ["java", "-cp", f"{lib}/*", "Interop.java", "audio_frame.avsc", "ours.bin", "theirs.bin", *released],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    java_fingerprints = dict(line.split() for line in result.stdout.split("\n") if line.strip())
    assert java_fingerprints == {
        f"{name}.v{version}.avsc": fp for (name, version), fp in RELEASED_FINGERPRINTS.items()
    }
    decoded = Codec().decode("rtms.audio", (tmp_path / "theirs.bin").read_bytes())
    assert decoded["seq"] == record["seq"] + 1000
    _expected({k: v for k, v in record.items() if k != "seq"}, decoded)


# -- malformed input -----------------------------------------------------------------------------


def _audio_bytes(codec: Codec | None = None) -> bytes:
    return (codec or Codec()).encode("rtms.audio", SAMPLES["audio_frame"][0])


def _decode_error(data: bytes, topic: str = "rtms.audio", codec: Codec | None = None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        (codec or Codec()).decode(topic, data)
    assert info.value.topic == topic
    assert topic in str(info.value) and info.value.reason in str(info.value)
    return info.value


@pytest.mark.parametrize("length", [0, 1, 2, 9, 10])
def test_too_short_value_is_a_decode_error(length: int) -> None:
    assert "too short" in _decode_error(_audio_bytes()[:length]).reason


def test_wrong_magic_is_a_decode_error_that_names_the_other_format() -> None:
    data = _audio_bytes()
    assert "wrong magic" in _decode_error(b"\xc3\x02" + data[2:]).reason
    confluent_looking = b"\x00\x00\x00\x00\x07" + data[10:]
    assert "Confluent framing" in _decode_error(confluent_looking).reason
    assert "single-object" in _decode_error(data, codec=Codec("http://127.0.0.1:9")).reason


def test_unknown_fingerprint_is_an_unknown_schema_error() -> None:
    err = _decode_error(SINGLE_OBJECT_MAGIC + bytes(8) + _audio_bytes()[10:])
    assert isinstance(err, UnknownSchemaError) and err.fingerprint == bytes(8)
    assert "unknown writer schema fingerprint 0000000000000000" in err.reason


def test_value_of_another_topic_is_named_as_such() -> None:
    video = Codec().encode("rtms.video", SAMPLES["video_frame"][0])
    err = _decode_error(video, topic="rtms.audio")
    assert (
        isinstance(err, UnknownSchemaError) and "video_frame" in err.reason and "another topic" in err.reason
    )


def test_every_truncation_of_a_value_is_a_decode_error() -> None:
    data = _audio_bytes()
    for cut in range(11, len(data)):
        assert "truncated or invalid Avro body" in _decode_error(data[:cut]).reason


def test_trailing_bytes_are_a_decode_error() -> None:
    assert "1 bytes left after the record" in _decode_error(_audio_bytes() + b"\x00").reason


def test_invalid_avro_body_is_a_decode_error() -> None:
    data = bytearray(Codec().encode("rtms.sessions", SAMPLES["session_event"][0]))
    # Body starts with meeting_uuid's length; 0x01 is zig-zag -1: a negative string length.
    data[10] = 0x01
    assert "invalid Avro body" in _decode_error(bytes(data), topic="rtms.sessions").reason
    enum_index = bytearray(Codec().encode("rtms.sessions", SAMPLES["session_event"][0]))
    offset = 10 + 1 + len(SAMPLES["session_event"][0]["meeting_uuid"]) + 1 + 32
    assert enum_index[offset] == 2  # product MEETING: symbol 1, zig-zag encoded
    enum_index[offset] = 0x7E  # symbol 63 of 5 (the reader's default is for unknown *names*, not indexes)
    assert "invalid Avro body" in _decode_error(bytes(enum_index), topic="rtms.sessions").reason


# -- encode errors -------------------------------------------------------------------------------


def _encode_error(mutate: Callable[[dict[str, Any]], Any]) -> EncodeError:
    record = json.loads(json.dumps({k: v for k, v in SAMPLES["audio_frame"][0].items() if k != "payload"}))
    mutate(record)
    with pytest.raises(EncodeError) as info:
        Codec().encode("rtms.audio", record)
    assert info.value.topic == "rtms.audio" and "rtms.audio" in str(info.value)
    return info.value


def test_missing_required_field_is_an_encode_error_naming_it() -> None:
    err = _encode_error(lambda r: r.pop("timestamp_ms"))
    assert err.field == "timestamp_ms" and "missing" in err.reason


def test_wrong_type_is_an_encode_error_naming_the_field() -> None:
    err = _encode_error(lambda r: r.update(timestamp_ms="yesterday"))
    assert err.field == "timestamp_ms" and "'yesterday'" in err.reason


def test_nested_field_error_names_the_path() -> None:
    err = _encode_error(lambda r: r["media"].update(sample_rate="16k"))
    assert err.field == "media.sample_rate"


def test_misspelt_field_is_an_encode_error() -> None:
    err = _encode_error(lambda r: r.update(timestmap_ms=1))
    assert err.field == "timestmap_ms" and "not in schema" in err.reason


def test_unknown_enum_symbol_is_an_encode_error() -> None:
    err = _encode_error(lambda r: r.update(stream_kind="SMELL"))
    assert err.field == "stream_kind" and "StreamKind" in err.reason


def test_non_mapping_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="must be a mapping"):
        Codec().encode("rtms.audio", ["not", "a", "record"])  # type: ignore[arg-type]


# -- Confluent framing against a real schema registry --------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A topic prefix of its own, so subjects of one test never meet another's."""
    return f"t{uuid.uuid4().hex[:10]}."


async def _latest_id(registry: str, subject: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{registry}/subjects/{subject}/versions/latest") as resp:
            assert resp.status == 200, await resp.text()
            return int((await resp.json(content_type=None))["id"])


async def test_confluent_round_trip_of_every_schema(schema_registry: str, prefix: str) -> None:
    codec = Codec(schema_registry, prefix)
    topics = [prefix + TOPIC_OF_SCHEMA[name] for name in sorted(TOPIC_OF_SCHEMA)]
    await codec.prepare(topics)
    # A second codec (another process) decodes by fetching each schema id once.
    reader = Codec(schema_registry, prefix)
    for name in sorted(TOPIC_OF_SCHEMA):
        topic = prefix + TOPIC_OF_SCHEMA[name]
        schema_id = await _latest_id(schema_registry, f"{topic}-value")
        for record in _all_records(name):
            data = codec.encode(topic, record)
            assert data[0] == 0 and int.from_bytes(data[1:5], "big") == schema_id
            _expected(record, codec.decode(topic, data))
            _expected(record, await reader.decode_async(topic, data))


async def test_prepare_registers_under_topic_name_strategy_once(schema_registry: str, prefix: str) -> None:
    codec = Codec(schema_registry, prefix)
    await codec.prepare([prefix + AUDIO.name, prefix + AUDIO.name])
    await codec.prepare([prefix + AUDIO.name])  # cached: no second registration
    await Codec(schema_registry, prefix).prepare([prefix + AUDIO.name])  # same schema: same id
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{schema_registry}/subjects/{prefix}{AUDIO.name}-value/versions") as resp:
            assert await resp.json(content_type=None) == [1]


async def test_stages_starting_together_all_register_and_agree_on_the_ids(
    schema_registry: str, prefix: str
) -> None:
    """Every stage registers the schemas it uses at start; compose starts them together. Eight
    codecs registering every subject at once all succeed (the registry may answer one of two
    simultaneous first registrations 409) and end with the same ids."""
    topics = [prefix + TOPIC_OF_SCHEMA[name] for name in sorted(TOPIC_OF_SCHEMA)]
    codecs = [Codec(schema_registry, prefix) for _ in range(8)]
    await asyncio.gather(*(c.prepare(topics) for c in codecs))
    record = SAMPLES["audio_frame"][0]
    ids = {int.from_bytes(c.encode(prefix + AUDIO.name, record)[1:5], "big") for c in codecs}
    assert ids == {await _latest_id(schema_registry, f"{prefix}{AUDIO.name}-value")}


async def test_encode_before_prepare_says_what_to_do(schema_registry: str, prefix: str) -> None:
    with pytest.raises(NotPreparedError, match="prepare"):
        Codec(schema_registry, prefix).encode(prefix + AUDIO.name, SAMPLES["audio_frame"][0])


async def test_unseen_schema_id_is_fetched_once_then_decoded(schema_registry: str, prefix: str) -> None:
    writer = Codec(schema_registry, prefix)
    await writer.prepare([prefix + AUDIO.name])
    data = writer.encode(prefix + AUDIO.name, SAMPLES["audio_frame"][0])
    reader = Codec(schema_registry, prefix)
    with pytest.raises(UnknownSchemaError) as info:
        reader.decode(prefix + AUDIO.name, data)
    assert info.value.schema_id == int.from_bytes(data[1:5], "big")
    assert (await reader.decode_async(prefix + AUDIO.name, data))["seq"] == 41
    assert reader.decode(prefix + AUDIO.name, data)["seq"] == 41  # now cached: sync


async def test_schema_id_the_registry_does_not_have_is_a_decode_error(
    schema_registry: str, prefix: str
) -> None:
    data = b"\x00" + (2**31 - 5).to_bytes(4, "big") + _audio_bytes()[10:]
    with pytest.raises(UnknownSchemaError, match="unknown schema id 2147483643"):
        await Codec(schema_registry, prefix).decode_async(prefix + AUDIO.name, data)


async def test_schema_id_of_another_topic_is_a_decode_error(schema_registry: str, prefix: str) -> None:
    codec = Codec(schema_registry, prefix)
    await codec.prepare([prefix + AUDIO.name, prefix + VIDEO.name])
    video = codec.encode(prefix + VIDEO.name, SAMPLES["video_frame"][0])
    with pytest.raises(UnknownSchemaError, match="VideoFrame, topic .* holds io.rtmsflow.AudioFrame"):
        codec.decode(prefix + AUDIO.name, video)


async def test_older_writer_schema_from_the_registry_is_resolved(schema_registry: str, prefix: str) -> None:
    """A producer that still runs an older audio_frame (here: without gap) registered its
    schema; its values decode with the current schema, the missing field taking its default."""
    old_schema = json.loads(json.dumps(current_schema("audio_frame").schema))
    old_schema["fields"] = [f for f in old_schema["fields"] if f["name"] != "gap"]
    subject = f"{prefix}{AUDIO.name}-value"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{schema_registry}/subjects/{subject}/versions",
            data=json.dumps({"schema": json.dumps(old_schema)}),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        ) as resp:
            old_id = int((await resp.json(content_type=None))["id"])
    record = {k: v for k, v in SAMPLES["audio_frame"][0].items() if k != "gap"}
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(old_schema), record)
    data = b"\x00" + old_id.to_bytes(4, "big") + body.getvalue()
    decoded = await Codec(schema_registry, prefix).decode_async(prefix + AUDIO.name, data)
    assert decoded["gap"] is None and decoded["seq"] == 41 and decoded["payload"] == record["payload"]


async def test_unreachable_registry_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="is the schema registry running"):
        await Codec("http://127.0.0.1:9/apis/ccompat/v7", timeout_s=2).prepare([AUDIO.name])
