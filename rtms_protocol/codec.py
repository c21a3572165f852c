"""RTMS JSON on the wire: `ProtocolError`, checked field access, and ONE field-driven encoder/decoder.

A message class lists its wire fields once (`WIRE`); the base class `Message` derives `to_dict()` and a
type-checked `from_dict()` from it. Only the media frame writes its own pair (`messages.MediaFrame`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson

from rtms_protocol.constants import MsgType


class ProtocolError(ValueError):
    """A message that cannot be used. `reason` is one of bad_json, not_object, missing_field,
    bad_field, unknown_msg_type, bad_base64; `field` names the offending key ("content.data")."""

    def __init__(self, reason: str, field: str = "", detail: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason}: {field}" + (f" ({detail})" if detail else ""))


_T = TypeVar("_T")
REQUIRED: Any = object()  # a `Wire.default` (and `get` default): the field must be present


def get(d: dict[str, Any], key: str, typ: type[_T], default: Any = REQUIRED, path: str = "") -> _T:
    """`d[key]` checked against `typ` (bool is not an int here); `default` when absent or null."""
    value = d.get(key)
    name = path + key
    if value is None:
        if default is REQUIRED:
            raise ProtocolError("missing_field", name)
        return default  # type: ignore[no-any-return]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProtocolError("bad_field", name, f"expected {typ.__name__}, got {type(value).__name__}")
    return value


def get_obj(d: dict[str, Any], key: str, path: str = "", required: bool = True) -> dict[str, Any] | None:
    """`d[key]` as a JSON object (None when absent and not `required`)."""
    value: dict[str, Any] | None = get(d, key, dict, REQUIRED if required else None, path)
    return value


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """`d` without its None values (what Zoom's SDK leaves out rather than sending null)."""
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Wire:
    """One wire field of a message: JSON `key` of type `typ` (checked on read), stored in the
    attribute `attr` (default: the key). `default` is what a reader takes when the key is absent or
    null (`REQUIRED`: an error); it may differ from the constructor's default, as Zoom's SDK is
    lenient on what it reads and complete in what it writes. `encode`/`decode` convert structured
    values (nested objects, lists) to and from their JSON form; `decode` gets the field path for
    its errors, and an `encode` that returns None leaves the key out."""

    key: str
    typ: type
    default: Any = REQUIRED
    attr: str = ""
    encode: Callable[[Any], Any] | None = None
    decode: Callable[[Any, str], Any] | None = None

    @property
    def name(self) -> str:
        return self.attr or self.key


class Message:
    """Base of every message dataclass: `MSG_TYPE`, its wire fields `WIRE` (in wire order) and
    optionally `NEST`, the key of an object that holds them (EVENT_UPDATE's `event`), and `READ`,
    the wire keys in the order a reader checks them when that is not the constructor's field order
    (which of two bad fields is reported is part of the dead-letter reason)."""

    __slots__ = ()
    MSG_TYPE: ClassVar[MsgType]
    WIRE: ClassVar[tuple[Wire, ...]] = ()
    NEST: ClassVar[str] = ""
    READ: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this message: `msg_type`, then each wire field that is not None."""
        fields: dict[str, Any] = {}
        for w in self.WIRE:
            value = getattr(self, w.name)
            if value is not None and w.encode is not None:
                value = w.encode(value)
            if value is not None:
                fields[w.key] = value
        if self.NEST:
            return {"msg_type": int(self.MSG_TYPE), self.NEST: fields}
        return {"msg_type": int(self.MSG_TYPE), **fields}

    @classmethod
    def from_dict(cls: type[_M], d: dict[str, Any]) -> _M:
        """The message of a JSON object (see `decode_fields`)."""
        return decode_fields(cls, d)


_M = TypeVar("_M", bound=Message)
_PLANS: dict[type, tuple[Wire, ...]] = {}


def decode_fields(cls: type[_M], d: dict[str, Any]) -> _M:
    """Read every wire field of `cls` from `d`, in `READ` order, else the constructor's field
    order (so the first bad field of a message is the one reported). An attribute with two wire
    keys takes the first present one; the second is not even checked then."""
    path = ""
    if cls.NEST:
        nested = get_obj(d, cls.NEST)
        assert nested is not None
        d, path = nested, cls.NEST + "."
    values: dict[str, Any] = {}
    for w in _reading_plan(cls):
        name = w.name
        if values.get(name) is not None:
            continue
        value: Any = get(d, w.key, w.typ, w.default, path)
        if value is not None and w.decode is not None:
            value = w.decode(value, path + w.key)
        values[name] = value
    return cls(**values)


def _reading_plan(cls: type[Message]) -> tuple[Wire, ...]:
    """The wire fields of `cls` in reading order; built once per class."""
    plan = _PLANS.get(cls)
    if plan is None:
        if cls.READ:
            by_key = {w.key: w for w in cls.WIRE}
            plan = tuple(by_key[key] for key in cls.READ)
        else:
            order = {f.name: i for i, f in enumerate(dataclasses.fields(cls))}  # type: ignore[arg-type]
            plan = tuple(sorted(cls.WIRE, key=lambda w: order[w.name]))  # stable: WIRE order within one
        _PLANS[cls] = plan
    return plan


def encode(msg: Message) -> str:
    """The compact JSON text of a message."""
    return json.dumps(msg.to_dict(), separators=(",", ":"), ensure_ascii=False)


def decode_json(raw: str | bytes | bytearray) -> dict[str, Any]:
    """JSON text (or UTF-8 bytes: Zoom's SDK accepts JSON in binary frames too) to an object with
    an integer `msg_type`. The object is `json.loads`'s: orjson (3-4x faster) where it parses the
    same, json where it refuses (lone surrogates, NaN, UTF-16, ...) or holds a float (orjson reads
    an integer beyond 64 bits as one); json's error is the bad_json detail."""
    obj = orjson_object(raw)
    if obj is None or _has_float(obj):
        obj = _json_loads(raw)
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", "", type(obj).__name__)
    get(obj, "msg_type", int)
    return obj


def orjson_object(raw: str | bytes | bytearray) -> Any:
    """orjson's object of `raw`, unchecked (an integer beyond 64 bits is a float in it), or None where
    orjson refuses (or for `null`). For a reader that rejects any float where it wants an int."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _json_loads(raw: str | bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", "", str(exc)) from None


def _has_float(obj: Any) -> bool:
    """Whether a parsed JSON value holds a float anywhere (a loop, not recursion: orjson takes
    1024 levels of nesting)."""
    stack = [obj]
    while stack:
        v = stack.pop()
        cls = v.__class__
        if cls is float:
            return True
        if cls is dict or cls is list:
            for x in v.values() if cls is dict else v:
                c = x.__class__
                if c is float:
                    return True
                if c is dict or c is list:
                    stack.append(x)
    return False
