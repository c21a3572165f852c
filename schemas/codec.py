"""Encode and decode topic values with the topic's Avro schema, in one of two wire formats.

Without a registry: Avro single-object encoding (writer schema found by fingerprint among the current and
released versions). With one (`Codec(registry_url)`): Confluent framing, subject `<topic>-value`; schemas
are registered in `await codec.prepare(topics)`, `decode_async` fetches an unknown schema id once."""

from __future__ import annotations

import asyncio
import functools
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas.catalog import SchemaLoadError, SchemaVersion, catalog, current_schema, schema_version
from schemas.topics import spec_for

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5
_REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class CodecError(ValueError):
    """A value could not be encoded or decoded for `topic`; `reason` says why, for a human."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{self._verb} a value of topic {topic!r}: {reason}")

    _verb = "cannot convert"


class EncodeError(CodecError):
    """The record does not match the topic's schema; `field` is the dotted path of the first
    offending field (e.g. "media.sample_rate"), or None when it cannot be pinned to one."""

    _verb = "cannot encode"

    def __init__(self, topic: str, reason: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(topic, f"field {field!r}: {reason}" if field else reason)


class DecodeError(CodecError):
    """The bytes are not a value of the topic: too short, wrong magic, unknown writer schema,
    truncated or invalid Avro body. Consumers send such a record to the dead-letter topic."""

    _verb = "cannot decode"


class UnknownSchemaError(DecodeError):
    """The writer schema (fingerprint or registry id) is not known to this process.

    With a registry, `Codec.decode_async` fetches it; without one, the data was written with a
    schema that is neither current nor in schemas/history (or belongs to another topic)."""

    def __init__(
        self, topic: str, reason: str, *, schema_id: int | None = None, fingerprint: bytes | None = None
    ):
        self.schema_id = schema_id
        self.fingerprint = fingerprint
        super().__init__(topic, reason)


class NotPreparedError(RuntimeError):
    """`encode` was called for a topic whose schema id is not known yet (registry mode)."""


class RegistryError(RuntimeError):
    """The schema registry could not be reached or refused a request; the message has its answer."""


@dataclass(frozen=True, slots=True)
class _Writer:
    header: bytes
    parsed: Any
    schema: SchemaVersion


@dataclass(frozen=True, slots=True)
class _Reader:
    writer: Any
    reader: Any  # None when the writer schema is the current one: no resolution needed


class Codec:
    """Avro values of rtmsflow topics, in single-object encoding or, with `registry_url`, in
    Confluent framing (magic byte 0 + schema id).

    The caller passes its settings' values: `registry_url` (empty: none) and `prefix`, the run's topic
    prefix. Topic names given to `encode` and `decode` are broker names, and `prefix + base name` maps
    to the base topic's schema. A Codec holds only caches; it needs no closing."""

    def __init__(self, registry_url: str | None = None, prefix: str = "", *, timeout_s: float = 10.0) -> None:
        self.registry_url = registry_url.rstrip("/") if registry_url else None
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._writers: dict[str, _Writer] = {}
        # Keyed by (topic, fingerprint) in single-object mode, (topic, schema id) in registry mode.
        self._readers: dict[tuple[str, bytes | int], _Reader] = {}
        self._schema_by_id: dict[int, SchemaVersion] = {}
        self._id_by_subject: dict[tuple[str, bytes], int] = {}  # (subject, fingerprint) -> id
        self._missing_ids: set[int] = set()

    def __repr__(self) -> str:
        mode = f"registry={self.registry_url!r}" if self.registry_url else "single-object"
        return f"Codec({mode}, prefix={self.prefix!r})"

    def schema_for(self, topic: str) -> SchemaVersion:
        """The current value schema of a broker topic name; KeyError for a topic not in schemas.topics."""
        return current_schema(spec_for(topic, self.prefix).schema)

    # -- encode --------------------------------------------------------------------------------

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """The record as a value of `topic`. Fields with a default may be left out; a field the
        schema does not have, a missing required field or a wrong type raises EncodeError."""
        writer = self._writers.get(topic)
        if writer is None:
            writer = self._writer_for(topic)
        out = io.BytesIO()
        out.write(writer.header)
        try:
            schemaless_writer(out, writer.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/AttributeError...
            raise _encode_error(topic, writer.schema, record, exc) from exc
        return out.getvalue()

    def _writer_for(self, topic: str) -> _Writer:
        schema = self.schema_for(topic)
        if self.registry_url is None:
            header = SINGLE_OBJECT_MAGIC + schema.fingerprint
        else:
            schema_id = self._id_by_subject.get((_subject(topic), schema.fingerprint))
            if schema_id is None:
                raise NotPreparedError(
                    f"no schema id for topic {topic!r} yet: `await codec.prepare([{topic!r}])` "
                    "registers its schema before the first encode"
                )
            header = bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")
        writer = _Writer(header, schema.parsed, schema)
        self._writers[topic] = writer
        return writer

    # -- decode --------------------------------------------------------------------------------

    def decode(self, topic: str, data: bytes) -> dict[str, Any]:
        """The record in `data`, read with the topic's current schema (older writer versions are
        resolved to it). Raises DecodeError (UnknownSchemaError for an unseen schema id)."""
        if self.registry_url is None:
            if len(data) < SINGLE_OBJECT_HEADER_LEN + 1:
                raise DecodeError(
                    topic, f"too short: {len(data)} bytes, a single-object value has at least 11"
                )
            if data[:2] != SINGLE_OBJECT_MAGIC:
                raise DecodeError(
                    topic,
                    f"wrong magic {data[:2].hex()}: not Avro single-object encoding (c301)" + _hint(data),
                )
            key: bytes | int = data[2:10]
            start = SINGLE_OBJECT_HEADER_LEN
        else:
            if len(data) < CONFLUENT_HEADER_LEN + 1:
                raise DecodeError(
                    topic, f"too short: {len(data)} bytes, a Confluent-framed value has at least 6"
                )
            if data[0] != CONFLUENT_MAGIC:
                raise DecodeError(
                    topic,
                    f"wrong magic {data[:1].hex()}: not Confluent framing (00 + schema id)" + _hint(data),
                )
            key = int.from_bytes(data[1:5], "big")
            start = CONFLUENT_HEADER_LEN
        entry = self._readers.get((topic, key))
        if entry is None:
            entry = self._reader_for(topic, key)
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record = schemaless_reader(body, entry.writer, entry.reader)
        except Exception as exc:  # untrusted bytes: fastavro raises EOFError, ValueError, IndexError...
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DecodeError(topic, f"truncated or invalid Avro body ({detail})") from exc
        if body.tell() != len(data):
            raise DecodeError(
                topic, f"invalid Avro body: {len(data) - body.tell()} bytes left after the record"
            )
        if not isinstance(record, dict):  # cannot happen with a record schema; keeps the type exact
            raise DecodeError(topic, f"decoded a {type(record).__name__}, not a record")
        return record

    async def decode_async(self, topic: str, data: bytes) -> dict[str, Any]:
        """`decode`, fetching a writer schema this process has not seen from the registry first
        (once per schema id). Without a registry it is `decode`."""
        try:
            return self.decode(topic, data)
        except UnknownSchemaError as exc:
            if self.registry_url is None or exc.schema_id is None or exc.schema_id in self._missing_ids:
                raise
            async with self._session() as session:
                await self._fetch_id(session, exc.schema_id)
            return self.decode(topic, data)

    def _reader_for(self, topic: str, key: bytes | int) -> _Reader:
        current = self.schema_for(topic)
        if isinstance(key, bytes):
            writer = catalog().by_fingerprint.get(key)
            if writer is None:
                raise UnknownSchemaError(
                    topic,
                    f"unknown writer schema fingerprint {key.hex()}: neither the current "
                    f"{current.name} schema nor a version in schemas/history/{current.name}",
                    fingerprint=key,
                )
            if writer.name != current.name:
                raise UnknownSchemaError(
                    topic,
                    f"fingerprint {key.hex()} is schema {writer.name} ({writer.origin}), "
                    f"not {current.name}: a value of another topic?",
                    fingerprint=key,
                )
        else:
            found = self._schema_by_id.get(key)
            if found is None:
                raise UnknownSchemaError(
                    topic,
                    f"unknown schema id {key}"
                    + (" (the registry does not have it)" if key in self._missing_ids else ""),
                    schema_id=key,
                )
            writer = found
            # Avro resolution matches records by unqualified name (the spec), so compare those.
            if writer.full_name.rpartition(".")[2] != current.full_name.rpartition(".")[2]:
                raise UnknownSchemaError(
                    topic,
                    f"schema id {key} is {writer.full_name}, topic {topic!r} holds {current.full_name}",
                    schema_id=key,
                )
        entry = _Reader(writer.parsed, None if writer.fingerprint == current.fingerprint else current.parsed)
        self._readers[(topic, key)] = entry
        return entry

    # -- registry ------------------------------------------------------------------------------

    async def prepare(self, topics: Iterable[str]) -> None:
        """Make `encode`/`decode` of these topics need no I/O. With a registry: register each
        topic's current schema under `<topic>-value` (like a producer's auto-register) and look up
        the ids of its released versions, so old data decodes without a fetch. Without a registry
        it only checks that the topics are known. Raises RegistryError, KeyError (unknown topic)."""
        topics = list(dict.fromkeys(topics))
        for topic in topics:
            self.schema_for(topic)
        if self.registry_url is None:
            return
        async with self._session() as session:
            for topic in topics:
                subject = _subject(topic)
                current = self.schema_for(topic)
                if (subject, current.fingerprint) not in self._id_by_subject:
                    answer = await self._register(session, subject, current.json)
                    self._remember(subject, _id_of(answer, self.registry_url), current)
                for old in catalog().history.get(current.name, ()):
                    if (subject, old.fingerprint) in self._id_by_subject:
                        continue
                    answer = await self._request(
                        session, "POST", f"/subjects/{subject}", old.json, missing_ok=True
                    )
                    if answer is not None:  # never registered: no data written with it here
                        self._remember(subject, _id_of(answer, self.registry_url), old)
                self._writers.pop(topic, None)

    async def _register(
        self, session: aiohttp.ClientSession, subject: str, schema_json: str
    ) -> dict[str, Any] | None:
        """POST the schema to the subject. Stages starting together register the same subjects at
        once, and a registry may answer one of two simultaneous first registrations 409 (Apicurio:
        "artifact already exists"); asked again, it answers the id. A 409 that stays (Confluent's
        answer to an incompatible schema) is raised after a few tries."""
        for attempt in range(_REGISTER_TRIES):
            try:
                return await self._request(session, "POST", f"/subjects/{subject}/versions", schema_json)
            except RegistryError as exc:
                if " answered HTTP 409" not in str(exc) or attempt == _REGISTER_TRIES - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _remember(self, subject: str, schema_id: int, schema: SchemaVersion) -> None:
        self._id_by_subject[(subject, schema.fingerprint)] = schema_id
        self._schema_by_id.setdefault(schema_id, schema)

    async def _fetch_id(self, session: aiohttp.ClientSession, schema_id: int) -> None:
        answer = await self._request(session, "GET", f"/schemas/ids/{schema_id}", None, missing_ok=True)
        if answer is None:
            self._missing_ids.add(schema_id)
            return
        kind = answer.get("schemaType", "AVRO")
        if kind != "AVRO" or not isinstance(answer.get("schema"), str):
            raise RegistryError(f"schema id {schema_id} at {self.registry_url} is {kind}, not an Avro schema")
        origin = f"registry {self.registry_url} id {schema_id}"
        try:
            fetched = schema_version(answer["schema"], name="?", version=None, origin=origin)
        except SchemaLoadError as exc:
            raise RegistryError(str(exc)) from exc
        # A schema we ship is used as ours (same parsed object, same name); others keep the registry's.
        self._schema_by_id[schema_id] = catalog().by_fingerprint.get(fetched.fingerprint, fetched)

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"Accept": _REGISTRY_CONTENT_TYPE},
        )

    async def _request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        schema_json: str | None,
        *,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        url = f"{self.registry_url}{path}"
        body = None if schema_json is None else json.dumps({"schema": schema_json})
        headers = {"Content-Type": _REGISTRY_CONTENT_TYPE} if body is not None else None
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 404 and missing_ok:
                    return None
                if resp.status >= 300:
                    raise RegistryError(f"{method} {url} answered HTTP {resp.status}: {text[:500]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(f"{method} {url} failed: {exc!r}; is the schema registry running?") from exc
        try:
            answer = json.loads(text)
        except ValueError as exc:
            raise RegistryError(f"{method} {url} answered non-JSON: {text[:200]!r}") from exc
        if not isinstance(answer, dict):
            raise RegistryError(f"{method} {url} answered {text[:200]!r}, expected a JSON object")
        return answer


_REGISTER_TRIES = 5


def _subject(topic: str) -> str:
    """The registry subject of a topic's values (Confluent TopicNameStrategy)."""
    return f"{topic}-value"


def _id_of(answer: dict[str, Any] | None, url: str | None) -> int:
    schema_id = answer.get("id") if answer else None
    if not isinstance(schema_id, int) or isinstance(schema_id, bool):
        raise RegistryError(f"schema registry {url} answered {answer!r} without an integer id")
    return schema_id


def _hint(data: bytes) -> str:
    """Name the other wire format when the bytes look like it (a registry/no-registry mismatch)."""
    if data[:2] == SINGLE_OBJECT_MAGIC:
        return "; it looks like single-object encoding: is RTMSFLOW_SCHEMA_REGISTRY_URL set on one side only?"
    if data[:1] == b"\x00":
        return "; it looks like Confluent framing: is RTMSFLOW_SCHEMA_REGISTRY_URL set on one side only?"
    return ""


def _encode_error(
    topic: str, schema: SchemaVersion, record: Mapping[str, Any], exc: Exception
) -> EncodeError:
    """Turn a fastavro write failure into an EncodeError that names the offending field."""
    if not isinstance(record, Mapping):
        return EncodeError(topic, f"a record must be a mapping, got {type(record).__name__}")
    names = {f["name"] for f in schema.schema["fields"]}
    extra = sorted(str(k) for k in record if k not in names)
    if extra:
        return EncodeError(topic, f"not in schema {schema.full_name} (misspelt?)", ", ".join(extra))
    try:
        validate(record, schema.parsed, raise_errors=True)
    except ValidationError as verr:
        first = verr.errors[0]
        path = _field_paths(schema).get(first.field.rpartition(".")[0], "")
        leaf = first.field.rpartition(".")[2]
        field = f"{path}.{leaf}" if path else leaf
        if first.datum is None:
            return EncodeError(topic, "missing (required, no default)", field)
        return EncodeError(
            topic,
            f"{first.datum!r:.80} ({type(first.datum).__name__}) is not a valid {_type_name(first.schema)}",
            field,
        )
    except Exception:  # validation itself choked: fall back to fastavro's own message
        pass
    return EncodeError(topic, f"{type(exc).__name__}: {exc}")


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return f"{schema.get('type')} {schema.get('name', '')}".strip()
    if isinstance(schema, list):
        return " | ".join(_type_name(s) for s in schema)
    return str(schema)


def _field_paths(schema: SchemaVersion) -> dict[str, str]:
    """Map each named record inside the schema to the dotted path where it appears first, so a
    fastavro error on "io.rtmsflow.AudioParams.codec" reads as "media.codec"."""
    paths: dict[str, str] = {schema.full_name: ""}

    def walk(t: Any, path: str, ns: str) -> None:
        if isinstance(t, list):
            for branch in t:
                walk(branch, path, ns)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind == "record":
                name = t["name"] if "." in t["name"] else f"{t.get('namespace', ns)}.{t['name']}"
                paths.setdefault(name, path)
                for f in t["fields"]:
                    walk(f["type"], f"{path}.{f['name']}" if path else f["name"], name.rpartition(".")[0])
            elif kind == "array":
                walk(t["items"], f"{path}[]", ns)
            elif kind == "map":
                walk(t["values"], f"{path}{{}}", ns)

    for f in schema.schema["fields"]:
        walk(f["type"], f["name"], schema.full_name.rpartition(".")[0])
    return paths


@functools.cache
def default_codec() -> Codec:
    """The process-wide codec without a registry and without a topic prefix."""
    return Codec()


def encode(topic: str, record: Mapping[str, Any]) -> bytes:
    """Encode with the default codec (single-object encoding, no topic prefix)."""
    return default_codec().encode(topic, record)


def decode(topic: str, data: bytes) -> dict[str, Any]:
    """Decode with the default codec (single-object encoding, no topic prefix)."""
    return default_codec().decode(topic, data)
