"""The receive fast path (`MediaValues.fast_media_item`) accepts exactly what the full parser
(`rtms_protocol.parse`) accepts, and builds the same value; what the client does with a message on a
media socket (a value delivered, or a dead letter with its reason) is what the full parser says of
it. Properties over generated well-formed and malformed messages."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import random
from typing import Any

import pybase64
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rtms_protocol as proto
from ingest.backend import DeadLetterData, StreamSession
from ingest.rtms_client import SIGNALING, ClientConfig, ClientPhase, Connect, Deliver, RtmsClient, Send
from rtms_protocol import MsgType, ProtocolError, decode_json
from rtms_protocol.session import keep_alive_reply

SESSION = StreamSession("meet==", "stream-1", "ws://127.0.0.1:9/signaling")
CONFIG = ClientConfig("cid", "csecret", deskshare=True)
MEDIA_CHANNELS = ("audio", "video", "deskshare", "transcript")
FAST_TYPES = (MsgType.MEDIA_DATA_AUDIO, MsgType.MEDIA_DATA_VIDEO, MsgType.MEDIA_DATA_SHARE)
MEDIA_TYPES = (*FAST_TYPES, MsgType.MEDIA_DATA_TRANSCRIPT, MsgType.MEDIA_DATA_CHAT)
KNOWN_TYPES = frozenset(int(t) for t in MsgType)
INT_FIELDS = ("timestamp", "user_id", "length", "start_time", "end_time", "language")
STR_FIELDS = ("user_name", "channel_id")

# No example database written into the work tree, and no deadline, so a
# loaded machine cannot fail it. About 2 s of CPU per property.
PROPERTY = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- the client, ready to receive on every media socket ----------------------------------------------


@functools.cache
def ready_client() -> tuple[RtmsClient, dict[str, int]]:
    """A client driven through the signaling and data handshakes to READY; its sockets' conns.
    One for the whole module: what it receives on a ready media socket changes nothing it keeps
    but the sockets' last-receive times (the second property checks it stays READY)."""
    client = RtmsClient(SESSION, CONFIG, random.Random(7))
    conns: dict[str, int] = {}

    def run(actions: list[Any]) -> list[Any]:
        for action in actions:
            if isinstance(action, Connect):
                conns[action.channel] = action.conn
        return actions

    run(client.start(100.0))
    run(client.on_open(SIGNALING, conns[SIGNALING], 100.0))
    urls = {key: f"ws://127.0.0.1:9/media/{key}" for key in MEDIA_CHANNELS}
    answer = {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": urls}}
    connects = run(client.on_message(SIGNALING, conns[SIGNALING], json.dumps(answer), 100.0, 1_000))
    for connect in (a for a in connects if isinstance(a, Connect)):
        run(client.on_open(connect.channel, connect.conn, 100.0))
        reply = json.dumps({"msg_type": 4, "status_code": 0, "payload_encrypted": False})
        run(client.on_message(connect.channel, connect.conn, reply, 100.0, 1_000))
    assert client.phase is ClientPhase.READY and set(MEDIA_CHANNELS) <= set(conns)
    return client, conns


def full_path(client: RtmsClient, raw: str | bytes) -> Any:
    """What the full parser makes of `raw`: the client's value built from the parsed frame, or the
    `ProtocolError` it raises."""
    try:
        frame = proto.parse(raw)
    except ProtocolError as exc:
        return exc
    if isinstance(frame, proto.ChatFrame):
        return client.values.chat_item(frame)
    assert isinstance(frame, proto.MediaFrame)
    return client.values.media_item(frame)


# --- generated messages ------------------------------------------------------------------------------

huge = st.sampled_from([2**63, -(2**63) - 1, 10**30, -(10**30)])
ints = st.integers(min_value=-(2**64), max_value=2**64) | huge
wrong_for_int = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.just([1]),
    st.just({"v": 1}),
)
wrong_for_str: st.SearchStrategy[Any] = st.one_of(
    ints, st.booleans(), st.floats(allow_nan=False), st.just(["x"]), st.just({})
)
valid_b64 = st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode("ascii"))
b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=14)
garbage = st.text(max_size=12)  # any characters: whitespace, '-', '_', non-ASCII
# an unknown field's value: a float in it sends decode_json to json.loads, not the fast path
unknown_values = ints | st.floats() | st.text(max_size=4)
padding_edges = st.sampled_from(
    ["", "=", "==", "AA=", "AAA=", "AAAA=", "AAAA==", "AA==AA==", "A===", "AAAA\n"]
)


@st.composite
def field_value(draw: st.DrawFn, valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> Any:
    """A field's value: mostly valid, else null or of a wrong type (absence is drawn separately).
    Drawn by hand: `st.one_of` flattens nested choices, which would weigh every leaf alike."""
    pick = draw(st.integers(0, 9))
    if pick < 7:
        return draw(valid)
    return None if pick == 7 else draw(wrong)


@st.composite
def contents(draw: st.DrawFn, text_data: bool) -> dict[str, Any]:
    """A `content` object: each field present or not, valid or not, plus maybe an unknown key. A
    third of them are well-formed, so acceptance is explored as much as rejection."""
    well_formed = draw(st.integers(0, 2)) == 0
    content: dict[str, Any] = {}
    if text_data:
        data = st.text(max_size=12)
    else:
        data = valid_b64 if well_formed else st.one_of(valid_b64, b64ish, garbage, padding_edges)

    def value(valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> Any:
        return draw(valid) if well_formed else draw(field_value(valid, wrong))

    if well_formed or draw(st.integers(0, 9)) > 0:  # data: mostly present
        content["data"] = value(data, wrong_for_str)
    for key in INT_FIELDS:
        if draw(st.booleans()) or (key == "timestamp" and (well_formed or draw(st.integers(0, 4)) > 0)):
            content[key] = value(ints, wrong_for_int)
    for key in STR_FIELDS:
        if draw(st.booleans()):
            content[key] = value(st.text(max_size=8), wrong_for_str)
    if draw(st.integers(0, 4)) == 0:
        content[draw(st.sampled_from(["extra", "data_type", "DATA", "msg_type"]))] = draw(unknown_values)
    return content


@st.composite
def messages(draw: st.DrawFn, msg_types: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A media message object; now and then `content` is missing or not an object."""
    msg_type = draw(msg_types)
    msg: dict[str, Any] = {"msg_type": msg_type}
    shape = draw(st.integers(0, 19))
    if shape == 0:
        pass  # no content
    elif shape == 1:
        msg["content"] = draw(st.one_of(st.none(), st.text(max_size=4), ints, st.just([{"data": "AAAA"}])))
    else:
        text_data = msg_type in (MsgType.MEDIA_DATA_TRANSCRIPT, MsgType.MEDIA_DATA_CHAT)
        msg["content"] = draw(contents(text_data))
    if draw(st.integers(0, 4)) == 0:
        msg["extra"] = draw(unknown_values)
    return msg


@st.composite
def wire(draw: st.DrawFn, msg_types: st.SearchStrategy[Any]) -> str | bytes:
    """A message as it comes off a socket: JSON text, UTF-8 bytes, truncated JSON, non-UTF-8 bytes,
    or JSON that is not an object."""
    text = json.dumps(draw(messages(msg_types)), ensure_ascii=draw(st.booleans()))
    form = draw(st.sampled_from(("text",) * 7 + ("truncated", "bytes", "not utf-8", "not an object")))
    if form == "not an object":
        return draw(st.sampled_from([f"[{text}]", '"text"', "14", "null"]))
    if form == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if form == "bytes":
        return text.encode()
    if form == "not utf-8":
        cut = draw(st.integers(0, len(text)))
        return text[:cut].encode() + b"\xff\xfe" + text[cut:].encode()  # not UTF-8
    return text


unknown_types = st.integers(min_value=-(2**40), max_value=2**40).filter(lambda t: t not in KNOWN_TYPES)
mistyped_types = st.one_of(st.just("14"), st.just(14.0), st.booleans(), st.none(), st.just([14]))
fast_types = st.sampled_from(FAST_TYPES)
_RECEIVE_TYPES = {"media": st.sampled_from(MEDIA_TYPES), "unknown": unknown_types, "mistyped": mistyped_types}
# mostly media frames; chosen by hand, as `st.one_of` would weigh each of its flattened leaves alike
receive_types = st.sampled_from(("media",) * 6 + ("unknown",) * 2 + ("mistyped",) * 2).flatmap(
    _RECEIVE_TYPES.__getitem__
)

_AAAA = {"msg_type": 14, "content": {"timestamp": 5, "data": "AAAA"}}


# --- the properties ------------------------------------------------------------------------------------


@PROPERTY
@given(raw=wire(fast_types))
@example(raw=json.dumps(_AAAA))
@example(raw=json.dumps({"msg_type": 15, "content": {"timestamp": True, "data": "AAAA"}}))
@example(raw=json.dumps({"msg_type": 16, "content": {"timestamp": 1, "user_id": None, "data": "AAAA="}}))
@example(raw=json.dumps({"msg_type": 14, "content": {"timestamp": 10**30, "data": "", "length": 2.0}}))
@example(raw=json.dumps({"msg_type": 14, "content": {"timestamp": 1, "data": "=="}}))
@example(raw=json.dumps({"msg_type": 14, "content": {"timestamp": 1, "data": "QUJD\n"}}))
@example(raw=json.dumps({"msg_type": 14, "content": {"timestamp": 1, "data": "QUJD="}}))  # pybase64 refuses
@example(raw=json.dumps({"msg_type": 14, "content": {"timestamp": 1, "data": "AAAA", "channel_id": 3}}))
def test_fast_path_accepts_exactly_what_the_full_parser_accepts_and_builds_the_same_value(
    raw: str | bytes,
) -> None:
    client, _ = ready_client()
    try:
        msg = proto.decode_json(raw)
    except ProtocolError:
        return  # never reaches either path: the client dead-letters it first (second property)
    fast = client.values.fast_media_item(msg["msg_type"], msg)
    full = full_path(client, raw)
    if isinstance(full, ProtocolError):
        assert fast is None, f"fast path took what the full parser rejects ({full}): {raw!r}"
    else:
        assert fast is not None, f"fast path left a well-formed frame to the full parser: {raw!r}"
        assert fast == full
        # made without __init__, yet the same value in every way: fields, repr, hash, still frozen
        assert type(fast) is type(full) and vars(fast) == vars(full) and repr(fast) == repr(full)
        assert hash(fast) == hash(full)
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.payload = b""  # type: ignore[misc]


@PROPERTY
@given(raw=wire(receive_types), channel=st.sampled_from(MEDIA_CHANNELS))
@example(raw=json.dumps(_AAAA), channel="audio")
@example(raw='{"msg_type": 14, "content": {"timest', channel="audio")
@example(raw=json.dumps({"msg_type": 99, "content": {}}), channel="video")
@example(raw=json.dumps({"msg_type": 17, "content": {"timestamp": "x", "data": "a"}}), channel="transcript")
@example(raw=b'{"msg_type": 15, "content": {"timestamp": 1, "data": "@@"}}', channel="video")
def test_a_media_socket_delivers_what_the_full_parser_accepts_and_dead_letters_the_rest(
    raw: str | bytes, channel: str
) -> None:
    client, conns = ready_client()
    full = full_path(client, raw)
    if isinstance(full, ProtocolError):
        payload = raw.encode() if isinstance(raw, str) else raw
        letter = DeadLetterData(f"ws:media/{channel}", str(full), f"ProtocolError.{full.reason}", payload)
        expected = [Deliver(letter)]
    else:
        expected = [Deliver(full)]
    assert client.on_message(channel, conns[channel], raw, 101.0, 2_000) == expected
    assert client.phase is ClientPhase.READY


def test_the_generators_reach_every_outcome_of_both_paths() -> None:
    """Positive control for the properties above: the generated messages include frames the fast
    path takes, frames the full parser accepts that are not the fast path's (transcripts, chat),
    and each kind of rejection, so neither property holds only because every input fell on one side.
    Derandomized: the same examples every run, so it cannot flake."""
    client, conns = ready_client()
    fast_outcomes: set[str] = set()
    received: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(raw=wire(fast_types))
    def fast_path(raw: str | bytes) -> None:
        try:
            msg = proto.decode_json(raw)
        except ProtocolError as exc:
            fast_outcomes.add(f"undecodable:{exc.reason}")
            return
        taken = client.values.fast_media_item(msg["msg_type"], msg) is not None
        fast_outcomes.add("fast" if taken else "not fast")
        full = full_path(client, raw)
        fast_outcomes.add(f"rejected:{full.reason}" if isinstance(full, ProtocolError) else "accepted")

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(raw=wire(receive_types), channel=st.sampled_from(MEDIA_CHANNELS))
    def receive(raw: str | bytes, channel: str) -> None:
        for action in client.on_message(channel, conns[channel], raw, 101.0, 2_000):
            assert isinstance(action, Deliver)
            item = action.item
            received.add(item.error if isinstance(item, DeadLetterData) else type(item).__name__)

    fast_path()
    receive()
    wanted = {"fast", "not fast", "accepted", "undecodable:bad_json"}
    wanted |= {f"rejected:{r}" for r in ("missing_field", "bad_field", "bad_base64")}
    assert wanted <= fast_outcomes, sorted(fast_outcomes)
    kinds = {"AudioData", "VideoData", "TranscriptData", "ChatData"}
    errors = ("bad_json", "not_object", "missing_field", "bad_field", "bad_base64", "unknown_msg_type")
    assert kinds | {f"ProtocolError.{e}" for e in errors} <= received, sorted(received)


@PROPERTY
@given(
    text=st.one_of(valid_b64, b64ish, garbage, padding_edges, st.text(alphabet="AQUJD=+/\n ", max_size=10))
)
@example(text="QUJD=")
def test_pybase64_accepts_a_subset_of_what_strict_base64_accepts_and_decodes_it_alike(text: str) -> None:
    """The fast path decodes with pybase64 and asks binascii's strict mode only when pybase64
    refuses: that is the strict decoder's answer only if pybase64 never takes more."""
    try:
        fast = pybase64.b64decode(text, validate=True)
    except ValueError:
        return
    assert binascii.a2b_base64(text, strict_mode=True) == fast


# --- the receive path takes orjson's object unchecked -------------------------------------------------

_BIG = 2**64  # orjson reads it as a float, json as an int
_RECEIVED = [
    {"msg_type": 14, "content": {"timestamp": _BIG, "data": "AAAA"}},  # json's int: delivered
    {"msg_type": 15, "content": {"timestamp": _BIG, "data": "AAAA", "user_id": "7"}},  # bad_field
    {"msg_type": 14, "content": {"timestamp": 5, "data": "AAAA", "user_id": _BIG, "user_name": 3}},
    {"msg_type": 16, "content": {"timestamp": 10**30, "data": "@@"}},  # bad_base64
    {"msg_type": 14, "content": {"timestamp": 5, "data": "AAAA", "length": _BIG}},
    {"msg_type": 14, "content": {"timestamp": 5, "data": "AAAA", "extra": 1.5}},
    {"msg_type": 15, "content": {"timestamp": 5, "data": "AAAA", "extra": _BIG}, "extra": [0.25]},
    {"msg_type": _BIG, "content": {"timestamp": 5, "data": "AAAA"}},  # unknown msg type
]


@pytest.mark.parametrize("obj", _RECEIVED)
def test_a_frame_with_a_float_in_orjson_s_object_is_received_as_the_full_parser_says(
    obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big integer where the fast path wants an int (a float in orjson's object) sends the frame
    to decode_json and the full parser; a float elsewhere is the fast path's. Either way the client
    delivers what the full parser makes of the frame, or its dead letter."""
    client, conns = ready_client()
    raw = json.dumps(obj)
    full = full_path(client, raw)
    if isinstance(full, ProtocolError):
        letter = DeadLetterData("ws:media/video", str(full), f"ProtocolError.{full.reason}", raw.encode())
        expected = [Deliver(letter)]
    else:
        expected = [Deliver(full)]
    exact: list[str | bytes] = []
    monkeypatch.setattr(proto, "decode_json", lambda raw: exact.append(raw) or decode_json(raw))
    assert client.on_message("video", conns["video"], raw, 101.0, 2_000) == expected
    used = [v for k, v in obj["content"].items() if k != "extra"] + [obj["msg_type"]]
    beyond_64_bits = any(type(v) is int and not -(2**63) <= v < 2**64 for v in used)
    assert exact == ([raw] if beyond_64_bits else [])  # the fast path refused a big int only


def test_the_big_integer_frame_is_delivered_with_json_s_int() -> None:
    """Control for the cases above: they include a delivery and dead letters, and the big
    timestamp is delivered as json's int, not orjson's float."""
    client, conns = ready_client()
    items = [
        client.on_message("audio", conns["audio"], json.dumps(obj), 101.0, 2_000)[0].item for obj in _RECEIVED
    ]
    assert type(items[0].timestamp_ms) is int and items[0].timestamp_ms == _BIG  # type: ignore[union-attr]
    errors = {i.error for i in items if isinstance(i, DeadLetterData)}
    assert errors == {f"ProtocolError.{r}" for r in ("bad_field", "bad_base64", "unknown_msg_type")}
    assert sum(not isinstance(i, DeadLetterData) for i in items) == 4


def test_the_fast_path_is_taken_for_a_normal_frame_and_not_for_a_big_timestamp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Positive control: a normal frame is delivered without decode_json (and so without its float
    walk), and the spy does see the frames the fast path refuses."""
    client, conns = ready_client()
    exact: list[str | bytes] = []
    monkeypatch.setattr(proto, "decode_json", lambda raw: exact.append(raw) or decode_json(raw))
    normal = json.dumps({"msg_type": 14, "content": {"user_id": 7, "timestamp": 5, "data": "AAAA"}}).encode()
    [delivered] = client.on_message("audio", conns["audio"], normal, 101.0, 2_000)
    assert isinstance(delivered, Deliver) and delivered.item == full_path(client, normal) and exact == []
    big = json.dumps({"msg_type": 14, "content": {"timestamp": _BIG, "data": "AAAA"}})
    client.on_message("audio", conns["audio"], big, 101.0, 2_000)
    keep_alive = json.dumps({"msg_type": 12, "timestamp": 5})
    reply = Send("audio", conns["audio"], keep_alive_reply(decode_json(keep_alive)))
    assert client.on_message("audio", conns["audio"], keep_alive, 101.0, 2_000) == [reply]
    assert exact == [big, keep_alive]


def test_a_deeply_nested_float_beside_a_frame_no_longer_ends_the_session() -> None:
    """json.loads raises RecursionError ~1000 levels deep, where orjson (1024 levels) parses: such a
    frame with a float used to escape on_message (the session failed); now the fast path delivers it
    as it does without the float (a decision, not the exact path's answer)."""
    client, conns = ready_client()
    frame = {"msg_type": 14, "content": {"timestamp": 5, "data": "AAAA"}}
    deep = json.dumps(frame)[:-1] + ', "extra": ' + "[" * 1020 + "1.5" + "]" * 1020 + "}"
    with pytest.raises(RecursionError):
        decode_json(deep)
    assert client.on_message("audio", conns["audio"], deep, 101.0, 2_000) == [
        Deliver(full_path(client, json.dumps(frame)))
    ]
