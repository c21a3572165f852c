"""Is a new version of a value schema a safe change? Checked by really reading data across versions.

Allowed: fully compatible with every released version (FULL_TRANSITIVE). `check_full` writes example
records using every union branch and enum symbol with one schema and reads them with the other, both ways;
any schema-resolution failure is the answer."""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import SchemaVersion

_PRIMITIVE_NAMES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class IncompatibleSchemaError(ValueError):
    """Data written with `writer` cannot be read with `reader`; `reason` is fastavro's answer."""

    def __init__(self, reader: SchemaVersion, writer: SchemaVersion, direction: str, reason: str) -> None:
        self.reader = reader
        self.writer = writer
        self.direction = direction
        self.reason = reason
        super().__init__(
            f"{direction} incompatible: {reader.origin} cannot read data written with {writer.origin}: {reason}"
        )


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def example_records(schema: SchemaVersion) -> list[dict[str, Any]]:
    """Valid records of `schema` that together use every branch of every union and every symbol
    of every enum (record k takes branch/symbol k, or the last one), with one item in each array
    and map. Deterministic: the same schema gives the same records."""
    named: dict[str, dict[str, Any]] = {}
    widest = 1

    def collect(t: Any, ns: str) -> None:
        nonlocal widest
        if isinstance(t, list):
            widest = max(widest, len(t))
            for branch in t:
                collect(branch, ns)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in ("record", "enum", "fixed"):
                full = _full_name(t["name"], t.get("namespace", ns))
                named[full] = t
                inner_ns = full.rpartition(".")[0]
                if kind == "record":
                    for f in t["fields"]:
                        collect(f["type"], inner_ns)
                elif kind == "enum":
                    widest = max(widest, len(t["symbols"]))
            elif kind == "array":
                collect(t["items"], ns)
            elif kind == "map":
                collect(t["values"], ns)

    def make(t: Any, k: int, ns: str) -> Any:
        if isinstance(t, list):
            return make(t[min(k, len(t) - 1)], k, ns)
        if isinstance(t, str) and t not in _PRIMITIVE_NAMES:
            t = named[_full_name(t, ns)]
        if isinstance(t, dict) and t.get("type") in _PRIMITIVE_NAMES:
            t = t["type"]  # {"type": "long", "logicalType": ...}: the plain type is a valid datum
        if isinstance(t, str):
            return {
                "null": None,
                "boolean": k % 2 == 1,
                "int": k,
                "long": k,
                "float": float(k),
                "double": float(k),
                "bytes": bytes([k % 256]),
                "string": f"s{k}",
            }[t]
        kind = t["type"]
        if kind == "record":
            inner_ns = _full_name(t["name"], t.get("namespace", ns)).rpartition(".")[0]
            return {f["name"]: make(f["type"], k, inner_ns) for f in t["fields"]}
        if kind == "enum":
            return t["symbols"][min(k, len(t["symbols"]) - 1)]
        if kind == "fixed":
            return bytes(t["size"])
        if kind == "array":
            return [make(t["items"], k, ns)]
        if kind == "map":
            return {"key": make(t["values"], k, ns)}
        raise ValueError(f"unsupported Avro type {kind!r} in {schema.origin}")

    top = schema.schema
    collect(top, top.get("namespace", ""))
    top_ns = schema.full_name.rpartition(".")[0]
    return [make(top, k, top_ns) for k in range(widest)]


def _read_across(reader: SchemaVersion, writer: SchemaVersion, direction: str) -> None:
    for record in example_records(writer):
        buf = io.BytesIO()
        schemaless_writer(buf, writer.parsed, record)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro: SchemaResolutionError, or an error deeper in the read
            raise IncompatibleSchemaError(reader, writer, direction, f"{type(exc).__name__}: {exc}") from exc


def check_backward(new: SchemaVersion, old: SchemaVersion) -> None:
    """Raise IncompatibleSchemaError unless `new` reads data written with `old`."""
    _read_across(new, old, "backward")


def check_forward(new: SchemaVersion, old: SchemaVersion) -> None:
    """Raise IncompatibleSchemaError unless `old` reads data written with `new`."""
    _read_across(old, new, "forward")


def check_full(new: SchemaVersion, old: SchemaVersion) -> None:
    """Raise IncompatibleSchemaError unless data written with either version reads with the other."""
    check_backward(new, old)
    check_forward(new, old)
