"""`rtms_protocol.decode_json` parses with orjson where orjson parses as `json.loads` does.

It used to be `json.loads` alone; a property over hostile text (integers beyond 64 bits, floats,
NaN and Infinity, lone surrogates, control characters, non-UTF-8 and UTF-16 bytes, a BOM, deep
nesting, truncation) checks that it returns the very same object (ints stay ints) or raises the same
`ProtocolError` (reason and detail: the dead letter's), whichever parser took the message."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rtms_protocol import ProtocolError, decode_json, orjson_object
from rtms_protocol.codec import _has_float, get

PROPERTY = settings(
    max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def json_only(raw: str | bytes) -> dict[str, Any]:
    """decode_json as it was: json.loads alone."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", "", str(exc)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", "", type(obj).__name__)
    get(obj, "msg_type", int)
    return obj


def outcome(parse: Any, raw: str | bytes) -> str:
    """The parsed object's repr (which tells 2**64 from 2.0**64), or the error's."""
    try:
        return repr(parse(raw))
    except ProtocolError as exc:
        return f"ProtocolError({exc.reason!r}, {str(exc)!r})"


numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64),
    st.sampled_from([2**64, 2**64 + 1, -(2**63) - 1, 10**30, -(10**30), 0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.text(max_size=8) | st.sampled_from(["\ud800", "\udc00x", "é", "\u2028", "\x00", "\x1f"])
leaves = st.none() | st.booleans() | numbers | texts
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
messages = st.fixed_dictionaries({"msg_type": st.integers(-3, 30) | numbers}, optional={"content": values})


@st.composite
def wire(draw: st.DrawFn) -> str | bytes:
    """JSON text as str or bytes, now and then damaged or re-encoded."""
    obj = draw(messages | values)
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))  # writes NaN, Infinity, lone surrogates
    form = draw(
        st.sampled_from(("text",) * 5 + ("utf-8", "truncated", "not utf-8", "bom", "utf-16", "raw ctl"))
    )
    if form == "utf-8":
        return text.encode("utf-8", "surrogatepass")
    if form == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if form == "not utf-8":
        cut = draw(st.integers(0, len(text)))
        return (
            text[:cut].encode("utf-8", "surrogatepass")
            + draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"]))
            + text[cut:].encode("utf-8", "surrogatepass")
        )
    if form == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if form == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    if form == "raw ctl":
        return text.replace('"', '"\x01', 1)
    return text


@PROPERTY
@given(raw=wire())
@example(raw='{"msg_type": 14, "content": {"timestamp": 18446744073709551616}}')
@example(raw='{"msg_type": 14, "content": {"timestamp": -9223372036854775809}}')
@example(raw='{"msg_type": 18446744073709551616}')
@example(raw='{"msg_type": 14, "content": {"user_name": "\\ud800"}}')
@example(raw='{"msg_type": 14, "content": [NaN, 1e400]}')
@example(raw=b'\xef\xbb\xbf{"msg_type": 14}')
@example(raw="[" * 900 + "]" * 900)
def test_decode_json_gives_what_json_loads_gives(raw: str | bytes) -> None:
    assert outcome(decode_json, raw) == outcome(json_only, raw)


def test_orjson_reads_a_big_integer_as_a_float_which_is_why_floats_go_to_json() -> None:
    """Positive control for the fallback: without it the first example above would differ."""
    raw = '{"msg_type": 14, "content": {"timestamp": 18446744073709551616}}'
    assert isinstance(orjson.loads(raw)["content"]["timestamp"], float)
    assert decode_json(raw)["content"]["timestamp"] == 2**64
    assert type(decode_json(raw)["content"]["timestamp"]) is int


def test_the_generator_reaches_both_parsers_and_every_outcome() -> None:
    """Positive control for the property: generated text is taken by orjson, sent back to json for
    a float, refused by orjson, and ends as an object and as each kind of error. Derandomized."""
    seen: set[str] = set()

    @settings(max_examples=600, deadline=None, database=None, derandomize=True)
    @given(raw=wire())
    def classify(raw: str | bytes) -> None:
        try:
            taken = orjson.loads(raw)
            seen.add("orjson: float" if _has_float(taken) else "orjson")
        except orjson.JSONDecodeError:
            seen.add("orjson refused")
        try:
            decode_json(raw)
            seen.add("object")
        except ProtocolError as exc:
            seen.add(exc.reason)

    classify()
    wanted = {"orjson", "orjson: float", "orjson refused", "object", "bad_json", "not_object", "bad_field"}
    assert wanted <= seen, sorted(seen)


def same_but_floats(fast: Any, exact: Any) -> bool:
    """Whether orjson's object `fast` is json's `exact` but where `fast` holds a float (which json
    may hold as an int: an integer beyond 64 bits); dicts compared key by key, in order."""
    if fast.__class__ is float:
        return exact.__class__ in (int, float) and float(exact) == fast
    if fast.__class__ is not exact.__class__:
        return False
    if fast.__class__ is dict:
        return list(fast) == list(exact) and all(same_but_floats(fast[k], exact[k]) for k in fast)
    if fast.__class__ is list:
        return len(fast) == len(exact) and all(map(same_but_floats, fast, exact))
    return bool(fast == exact)


@PROPERTY
@given(raw=wire())
@example(raw='{"msg_type": 14, "content": {"timestamp": 18446744073709551616, "x": 1.5}}')
@example(raw='{"msg_type": 14, "msg_type": 15, "x": 0.5}')
def test_orjson_object_is_json_loads_object_but_at_its_floats(raw: str | bytes) -> None:
    """What lets a reader that takes no float where it wants an int (the receive fast path) use
    `orjson_object` unchecked: where orjson parses, json parses too, to the same object but at
    orjson's floats."""
    fast = orjson_object(raw)
    if fast is None:
        return  # refused (or `null`): such a reader falls back to decode_json
    assert same_but_floats(fast, json.loads(raw)), raw


def test_orjson_object_is_unchecked_and_none_where_orjson_refuses() -> None:
    big = '{"msg_type": 14, "content": {"timestamp": 18446744073709551616}}'
    assert orjson_object(big) == {"msg_type": 14, "content": {"timestamp": 2.0**64}}
    assert type(orjson_object(big)["content"]["timestamp"]) is float  # decode_json's is an int
    assert orjson_object(b'{"msg_type": 14}') == {"msg_type": 14}
    assert orjson_object("[1, 2]") == [1, 2]  # no object check either
    for refused in ('{"msg_type": 14', '{"x": NaN}', b'\xef\xbb\xbf{"msg_type": 14}', '"\\ud800"', "null"):
        assert orjson_object(refused) is None, refused


def test_same_but_floats_tells_objects_apart() -> None:
    """Control for the property above: the comparison fails where the objects differ."""
    assert same_but_floats({"a": [2.0**64, 1.5]}, {"a": [2**64, 1.5]})
    assert not same_but_floats({"a": [1]}, {"a": [2]})
    assert not same_but_floats({"a": 1.0}, {"a": "1"})
    assert not same_but_floats({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same_but_floats({"a": 1}, {"a": True})
