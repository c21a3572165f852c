"""The schema files of the contract, loaded and parsed once.

Current schemas (`avro/<name>.avsc`) and released versions (`history/<name>/v<N>.avsc`) are read as
package data, parsed with fastavro and given their Parsing Canonical Form and CRC-64-AVRO fingerprint."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class SchemaLoadError(ValueError):
    """A schema file of the package is missing or not a valid Avro schema."""


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One version of a value schema: its JSON, the fastavro-parsed form and its fingerprint.

    `version` is None for the current schema (schemas/avro) and N for history/<name>/vN.avsc;
    `origin` says where it came from (a package path, or "registry id 7")."""

    name: str
    version: int | None
    origin: str
    schema: dict[str, Any] = field(repr=False)
    parsed: Any = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: bytes = field(repr=False)

    @property
    def full_name(self) -> str:
        """The record's full Avro name, e.g. io.rtmsflow.AudioFrame."""
        ns = self.schema.get("namespace")
        name = str(self.schema["name"])
        return name if "." in name or not ns else f"{ns}.{name}"

    @property
    def json(self) -> str:
        """The schema as compact JSON (docs and defaults kept): what is sent to a registry."""
        return json.dumps(self.schema, separators=(",", ":"), ensure_ascii=False)


def schema_version(
    schema: Mapping[str, Any] | str, *, name: str, version: int | None, origin: str
) -> SchemaVersion:
    """Parse a schema given as a dict or JSON text; raises SchemaLoadError if it is not valid Avro."""
    try:
        obj: dict[str, Any] = json.loads(schema) if isinstance(schema, str) else dict(schema)
        parsed = parse_schema(_without_logical_types(obj))
        canonical = to_parsing_canonical_form(obj)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaLoadError(f"{origin}: not a valid Avro schema: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("type") != "record":
        raise SchemaLoadError(f"{origin}: a topic value schema must be an Avro record")
    # fastavro gives the 8 bytes as hex in the order single-object encoding writes them
    # (little-endian), e.g. "null" -> 8a8f25cce724dd63 (Avro spec: 0x63dd24e7cc258f8a).
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    _bytes_defaults(parsed)
    return SchemaVersion(name, version, origin, obj, parsed, canonical, fp)


def _without_logical_types(t: Any) -> Any:
    """A copy of a schema without `logicalType` attributes, for our own reading and writing.

    The contract marks times as `timestamp-millis` so that data teams' Avro readers hand out
    datetimes; the wire bytes are a plain long either way (the Parsing Canonical Form, and so the
    fingerprint, drops logical types too). rtmsflow's stages keep times as integer ms: converting
    every timestamp to a datetime and back would cost a few microseconds a record on the hot path."""
    if isinstance(t, list):
        return [_without_logical_types(branch) for branch in t]
    if isinstance(t, dict):
        return {k: _without_logical_types(v) for k, v in t.items() if k != "logicalType"}
    return t


def _bytes_defaults(t: Any) -> None:
    """Turn the JSON-string defaults of bytes fields into bytes, in place in a parsed schema.

    Avro writes a bytes default as a JSON string whose code points 0-255 are the bytes; fastavro
    keeps the str, so a record that omits `payload` (an end-of-stream marker) would fail to encode,
    and a reader filling a missing bytes field would hand out a str."""
    if isinstance(t, list):
        for branch in t:
            _bytes_defaults(branch)
    elif isinstance(t, dict):
        if t.get("type") == "record":
            for f in t["fields"]:
                ftype = f["type"]
                first = ftype[0] if isinstance(ftype, list) and ftype else ftype
                kind = first.get("type") if isinstance(first, dict) else first
                if kind in ("bytes", "fixed") and isinstance(f.get("default"), str):
                    f["default"] = f["default"].encode("latin-1")
                _bytes_defaults(ftype)
        elif t.get("type") == "array":
            _bytes_defaults(t["items"])
        elif t.get("type") == "map":
            _bytes_defaults(t["values"])


def _read(entry: Traversable, *, name: str, version: int | None, origin: str) -> SchemaVersion:
    return schema_version(entry.read_text(encoding="utf-8"), name=name, version=version, origin=origin)


@dataclass(frozen=True)
class Catalog:
    """Every schema of the package: the current version and the history of each, by name."""

    current: Mapping[str, SchemaVersion]
    history: Mapping[str, tuple[SchemaVersion, ...]]
    by_fingerprint: Mapping[bytes, SchemaVersion]

    def versions(self, name: str) -> tuple[SchemaVersion, ...]:
        """The current schema of `name` followed by its released versions, newest first."""
        return (self.current[name], *reversed(self.history.get(name, ())))


@functools.cache
def catalog() -> Catalog:
    """Load and parse every schema file of the package (once per process)."""
    root = resources.files("schemas")
    current: dict[str, SchemaVersion] = {}
    for entry in sorted((root / "avro").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".avsc"):
            name = entry.name[: -len(".avsc")]
            current[name] = _read(entry, name=name, version=None, origin=f"schemas/avro/{entry.name}")
    if not current:
        raise SchemaLoadError("no schemas found in the schemas package (schemas/avro/*.avsc)")

    history: dict[str, tuple[SchemaVersion, ...]] = {}
    history_dir = root / "history"
    if history_dir.is_dir():
        for folder in sorted(history_dir.iterdir(), key=lambda e: e.name):
            if not folder.is_dir() or folder.name.startswith(("_", ".")):
                continue
            if folder.name not in current:
                raise SchemaLoadError(
                    f"schemas/history/{folder.name} has no current schema schemas/avro/{folder.name}.avsc"
                )
            versions = []
            for entry in folder.iterdir():
                match = _VERSION_FILE.match(entry.name)
                if match:
                    origin = f"schemas/history/{folder.name}/{entry.name}"
                    versions.append(_read(entry, name=folder.name, version=int(match[1]), origin=origin))
            history[folder.name] = tuple(sorted(versions, key=lambda v: v.version or 0))

    by_fingerprint: dict[bytes, SchemaVersion] = {}
    for name, cur in current.items():
        for sv in (*history.get(name, ()), cur):
            other = by_fingerprint.get(sv.fingerprint)
            if other is not None and other.name != name:
                # Two topics with one schema could not tell their data apart by fingerprint.
                raise SchemaLoadError(f"{sv.origin} and {other.origin} have the same canonical form")
            by_fingerprint[sv.fingerprint] = sv  # the current one wins over an identical history version
    return Catalog(current, history, by_fingerprint)


def schema_names() -> tuple[str, ...]:
    """The names of every value schema (file names under schemas/avro without .avsc)."""
    return tuple(catalog().current)


def current_schema(name: str) -> SchemaVersion:
    """The current version of one schema; KeyError names the known ones."""
    try:
        return catalog().current[name]
    except KeyError:
        raise KeyError(f"unknown schema {name!r}: not one of {sorted(catalog().current)}") from None


def schema_history(name: str) -> tuple[SchemaVersion, ...]:
    """The released versions of one schema, oldest first (empty if none was released yet)."""
    current_schema(name)
    return catalog().history.get(name, ())
