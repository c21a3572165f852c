"""The sans-I/O RTMS protocol package: numbers, signatures, builders and parsers, without sockets."""

from __future__ import annotations

import base64
import dataclasses
import json
import typing

import pytest

import rtms_protocol as p
from rtms_protocol.messages import _PARSERS
from schemas import records

# What Zoom's SDK put on the wire in the probe captures (docs/PROTOCOL.md §3.3, §4.1, §3.8, §5).
SDK_HANDSHAKE = (
    '{"meeting_uuid":"probeMeetingUuid==","msg_type":1,"protocol_version":1,'
    '"rtms_client_agent":"rtms_sdk_cpp-.0.20260319-python-rtms","rtms_stream_id":"probe-stream-0001",'
    '"sequence":3265786,"signature":"44fe2eb0fa9c315677ddefca2bcc85f24e414650f2e3e86c2fd4b569e1f82a00"}'
)
SDK_AUDIO_HANDSHAKE = (
    '{"media_params":{"audio":{"channel":2,"codec":4,"content_type":2,"data_opt":2,"sample_rate":3,"send_rate":20}},'
    '"media_type":1,"meeting_uuid":"probeMeetingUuid==","msg_type":3,"protocol_version":1,'
    '"rtms_stream_id":"probe-stream-0001","sequence":3265806,"signature":"44fe"}'
)
SDK_TRANSCRIPT_HANDSHAKE = (
    '{"media_params":null,"media_type":8,"meeting_uuid":"m","msg_type":3,"protocol_version":1,'
    '"rtms_stream_id":"s","sequence":1,"signature":"x"}'
)


def test_handshake_signature_matches_the_sdk_wire_value() -> None:
    sig = p.handshake_signature(
        "probe_client_id", "probe_client_secret", "probeMeetingUuid==", "probe-stream-0001"
    )
    assert sig == "44fe2eb0fa9c315677ddefca2bcc85f24e414650f2e3e86c2fd4b569e1f82a00"
    assert p.signatures_equal(sig, sig) and not p.signatures_equal(sig, "0" * 64)


def test_webhook_signature_hashes_timestamp_and_raw_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"meeting.rtms_started","payload":{}}'
    expected = "v0=" + hmac.new(b"tok", b"v0:1700000000:" + body, hashlib.sha256).hexdigest()
    assert p.webhook_signature("tok", "1700000000", body) == expected
    assert p.webhook_signature("tok", 1700000000, body) == expected


def test_url_validation_token_is_hmac_of_plain_token() -> None:
    import hashlib
    import hmac

    assert p.url_validation_token("tok", "abc") == hmac.new(b"tok", b"abc", hashlib.sha256).hexdigest()


def test_sdk_handshake_parses_with_its_extra_fields() -> None:
    msg = p.parse(SDK_HANDSHAKE)
    assert isinstance(msg, p.HandshakeRequest)
    assert msg.meeting_uuid == "probeMeetingUuid==" and msg.sequence == 3265786
    assert msg.rtms_client_agent.startswith("rtms_sdk_cpp")  # type: ignore[union-attr]
    assert msg.buffer_data is None


def test_sdk_data_handshakes_parse_including_null_media_params() -> None:
    audio = p.parse(SDK_AUDIO_HANDSHAKE)
    assert isinstance(audio, p.DataHandshakeRequest)
    assert audio.media_type == p.MediaType.AUDIO
    assert audio.media_params is not None and audio.media_params.audio == p.AudioParams(
        content_type=2, sample_rate=3, channel=2, codec=4, data_opt=2, send_rate=20
    )
    transcript = p.parse(SDK_TRANSCRIPT_HANDSHAKE)
    assert isinstance(transcript, p.DataHandshakeRequest) and transcript.media_params is None


def test_responses_carry_what_the_sdk_requires() -> None:
    ok = json.loads(p.encode(p.HandshakeResponse(0, media_urls={"audio": "ws://a", "all": "ws://b"})))
    assert ok == {
        "msg_type": 2,
        "protocol_version": 1,
        "sequence": 0,
        "status_code": 0,
        "reason": "",
        "media_server": {"server_urls": {"audio": "ws://a", "all": "ws://b"}},
    }
    rejected = json.loads(p.encode(p.HandshakeResponse(p.StatusCode.INVALID_SIGNATURE, "bad signature")))
    assert rejected["status_code"] == 3 and "media_server" not in rejected
    data = json.loads(p.encode(p.DataHandshakeResponse(0, media_params=p.MediaParams(video=p.VideoParams()))))
    assert data["payload_encrypted"] is False
    assert data["media_params"] == {
        "video": {"content_type": 3, "codec": 7, "resolution": 2, "data_opt": 3, "fps": 30}
    }
    share = p.MediaParams.from_dict({"deskshare": {"codec": 7, "fps": 30, "resolution": 2}})
    assert share is not None and "data_opt" not in share.to_dict()["deskshare"]


def test_keep_alive_response_echoes_timestamp_and_sequence() -> None:
    req = p.parse('{"msg_type":12,"timestamp":1795480540077,"sequence":1}')
    assert isinstance(req, p.KeepAliveRequest)
    assert p.encode(req.response()) == '{"msg_type":13,"sequence":1,"timestamp":1795480540077}'
    assert p.encode(p.KeepAliveRequest(5)) == '{"msg_type":12,"timestamp":5}'


def test_event_subscription_round_trips_in_sdk_wire_form() -> None:
    wire = '{"events":[{"event_type":8,"subscribe":true},{"event_type":9,"subscribe":false}],"msg_type":5}'
    msg = p.parse(wire)
    assert msg == p.EventSubscription(((8, True), (9, False)))
    assert json.loads(p.encode(msg)) == json.loads(wire)
    assert p.EventSubscription.subscribe(2, 3).changes == ((2, True), (3, True))


def test_events_and_states_round_trip() -> None:
    msgs: list[p.Message] = [
        p.EventUpdate(3, 10, participants=(p.Participant(1, "A"), p.Participant(2, "B"))),
        p.EventUpdate(4, 11, participants=(p.Participant(2),)),
        p.EventUpdate(2, 12, user_id=1, user_name="A"),
        p.EventUpdate(1, 13),
        p.StreamStateUpdate(p.StreamState.TERMINATED, p.StopReason.MEETING_ENDED, 14),
        p.SessionStateUpdate(p.SessionState.STOPPED, 15, "sess", stop_reason=6),
        p.SessionStateUpdate(p.SessionState.STARTED, 15, "sess"),
        p.ClientReadyAck("s"),
        p.StreamCloseRequest("s"),
        p.StreamCloseResponse("s", 0, "OK", 16),
        p.VideoSubscriptionRequest(16778240, True, 3489176),
        p.VideoSubscriptionResponse(16778240, 0, "OK", 17),
        p.SessionStateRequest("sess"),
        p.SessionStateResponse("sess", 2, 18),
        p.StreamStateRequest("s"),
        p.StreamStateResponse("s", 1, 19),
        p.KeepAliveResponse(20, 3),
    ]
    for msg in msgs:
        assert p.parse(p.encode(msg)) == msg, msg


def test_session_stop_reason_is_written_under_both_keys_and_read_from_either() -> None:
    d = json.loads(p.encode(p.SessionStateUpdate(5, 1, "x", stop_reason=6)))
    assert d["stop_reason"] == 6 and d["reason"] == 6
    only_reason = p.parse('{"msg_type":9,"state":5,"reason":24,"timestamp":1,"rtms_session_id":"x"}')
    assert isinstance(only_reason, p.SessionStateUpdate) and only_reason.stop_reason == 24


def test_media_frames_base64_binary_and_plain_text_transcripts() -> None:
    audio = p.MediaFrame(14, 1795480539575, b"\x00\x01" * 320, user_id=16778240, user_name="Alice Probe")
    d = audio.to_dict()
    assert d["content"]["length"] == 640 and base64.b64decode(d["content"]["data"]) == b"\x00\x01" * 320
    assert list(d["content"]) == ["user_id", "user_name", "data", "length", "timestamp"]
    assert p.parse(p.encode(audio)) == p.MediaFrame(
        14, 1795480539575, b"\x00\x01" * 320, 16778240, "Alice Probe", length=640
    )
    text = p.MediaFrame(
        17, 3, "hello world", user_id=7, user_name="Bob", start_time=1, end_time=3, language=9
    )
    d = text.to_dict()
    assert d["content"]["data"] == "hello world" and d["content"]["start_time"] == 1
    assert p.parse(p.encode(text)) == text


def test_lenient_media_defaults_missing_optional_fields() -> None:
    frame = p.parse('{"msg_type":14,"content":{"data":"AAE=","timestamp":5}}')
    assert frame == p.MediaFrame(14, 5, b"\x00\x01", user_id=0, user_name="")


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        ('{"msg_type":14,"content":', "bad_json", ""),
        (b"\xff\xfe", "bad_json", ""),
        ("[1,2]", "not_object", ""),
        ('{"content":{}}', "missing_field", "msg_type"),
        ('{"msg_type":"14"}', "bad_field", "msg_type"),
        ('{"msg_type":99}', "unknown_msg_type", "msg_type"),
        ('{"msg_type":14,"content":{"data":"!!notbase64!!","timestamp":1}}', "bad_base64", "content.data"),
        ('{"msg_type":14,"content":{"data":"AAE="}}', "missing_field", "content.timestamp"),
        (
            '{"msg_type":14,"content":{"data":"AAE=","timestamp":1,"user_id":"7"}}',
            "bad_field",
            "content.user_id",
        ),
        ('{"msg_type":14}', "missing_field", "content"),
        ('{"msg_type":1,"meeting_uuid":"m","rtms_stream_id":"s"}', "missing_field", "signature"),
        ('{"msg_type":2,"status_code":0}', "missing_field", "media_server"),
        (
            '{"msg_type":3,"meeting_uuid":"m","rtms_stream_id":"s","signature":"x","media_type":1,"media_params":{"audio":{"codec":"L16"}}}',
            "bad_field",
            "media_params.audio.codec",
        ),
        ('{"msg_type":5,"events":[3]}', "bad_field", "events[0]"),
        (
            '{"msg_type":6,"event":{"event_type":3,"participants":[{"user_name":"x"}]}}',
            "missing_field",
            "event.participants[0].user_id",
        ),
        ('{"msg_type":12,"timestamp":1,"sequence":true}', "bad_field", "sequence"),
        # with several bad fields, the one reported is the first a reader checks (READ order)
        (
            '{"msg_type":6,"event":{"event_type":"x","participants":[1]}}',
            "bad_field",
            "event.participants[0]",
        ),
        ('{"msg_type":6,"event":{"timestamp":1}}', "missing_field", "event.event_type"),
        ('{"msg_type":9,"stop_reason":"6"}', "bad_field", "stop_reason"),
        ('{"msg_type":2,"status_code":3,"reason":1,"sequence":"x"}', "bad_field", "reason"),
        ('{"msg_type":2,"status_code":0,"media_server":{}}', "missing_field", "media_server.server_urls"),
        (
            '{"msg_type":2,"status_code":3,"media_server":{"server_urls":{"a":1}}}',
            "bad_field",
            "media_server.server_urls.a",
        ),
        ('{"msg_type":20,"state":"1","rtms_stream_id":2}', "bad_field", "rtms_stream_id"),
    ],
)
def test_malformed_input_raises_protocol_error_naming_the_field(
    raw: str | bytes, reason: str, field: str
) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse(raw)
    assert (info.value.reason, info.value.field) == (reason, field)


def test_a_failed_handshake_needs_no_media_server_and_stop_reason_wins_over_reason() -> None:
    rejected = p.parse('{"msg_type":2,"status_code":3,"reason":"no"}')
    assert rejected == p.HandshakeResponse(3, "no")
    # `reason` is not even type-checked when `stop_reason` is there (it is the same value, twice)
    both = p.parse('{"msg_type":9,"state":5,"reason":"x","stop_reason":6}')
    assert isinstance(both, p.SessionStateUpdate) and both.stop_reason == 6


def test_every_field_of_a_message_is_on_the_wire() -> None:
    """The field-driven codec only writes what `WIRE` lists: a dataclass field left out of it would be
    silently dropped on encode and defaulted on parse."""
    checked = 0
    for cls in set(_PARSERS.values()):
        if cls in (
            p.MediaFrame,
            p.ChatFrame,
        ):  # their own to_dict/from_dict (shaped by msg_type, optional parts)
            continue
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        assert {w.name for w in cls.WIRE} == fields, cls.__name__
        checked += 1
    assert checked == 19


def test_a_chat_message_round_trips_with_its_recipients_and_a_public_one_names_none() -> None:
    private = p.ChatFrame(
        1700000000123, "see you ✓", 16778240, "Ann", "m-1", (p.Participant(16779264, "Bob"),)
    )
    wire = p.encode(private)
    back = p.parse(wire)
    assert back == private and back.private
    public = p.ChatFrame(1700000000124, "hello all", 16778240, "Ann")
    content = json.loads(p.encode(public))["content"]
    assert content == {
        "user_id": 16778240,
        "user_name": "Ann",
        "timestamp": 1700000000124,
        "data": "hello all",
    }
    assert p.parse(p.encode(public)) == public and not public.private
    # what a transcript-like chat packet without our optional fields parses to
    bare = p.parse('{"msg_type":18,"content":{"user_id":7,"user_name":"Cy","data":"hi","timestamp":5}}')
    assert bare == p.ChatFrame(5, "hi", 7, "Cy")
    with pytest.raises(p.ProtocolError, match="content.recipients"):
        p.parse('{"msg_type":18,"content":{"data":"hi","timestamp":5,"recipients":{"user_id":1}}}')


def test_products_name_their_webhook_events_and_carry_the_avro_symbols() -> None:
    assert p.Product.of_event("meeting.rtms_started") is p.Product.MEETING
    assert p.Product.of_event("webinar.rtms_stopped") is p.Product.WEBINAR
    assert p.Product.of_event("session.rtms_interrupted") is p.Product.VIDEO_SDK
    assert p.Product.of_event("contact_center.voice_rtms_started") is p.Product.CONTACT_CENTER
    assert p.Product.of_event("contact_center.rtms_started") is None
    assert p.Product.of_event("rtms.concurrency_limited") is None
    assert p.Product.from_webhook_name("session") is p.Product.VIDEO_SDK
    with pytest.raises(ValueError, match="product"):
        p.Product.from_webhook_name("VIDEO_SDK")
    assert {str(x) for x in p.Product} == set(typing.get_args(records.Product))


def test_resolutions_have_one_size_and_one_label_each() -> None:
    assert [(r.label, r.size) for r in p.Resolution] == [
        ("360p", (640, 360)),
        ("720p", (1280, 720)),
        ("1080p", (1920, 1080)),
        ("1440p", (2560, 1440)),
    ]
    assert p.Resolution.from_label("1080p") is p.Resolution.FHD
    with pytest.raises(ValueError, match="720p"):
        p.Resolution.from_label("4k")


def test_enums_carry_wire_numbers_and_helpers() -> None:
    assert p.MsgType.VIDEO_SUBSCRIPTION_RESP == 29 and p.StopReason.KEEP_ALIVE_TIMEOUT == 24
    assert p.StatusCode.DUPLICATE_MEDIA_DATA_CONNECTION == 16 and p.StatusCode.INTERNAL_EXCEPTION == 45
    assert p.AudioSampleRate.SR_48K.hz == 48000 and p.Resolution.HD.size == (1280, 720)
    assert p.TranscriptLanguage.NONE == -1 and p.TranscriptLanguage.VIETNAMESE == 36
    assert p.MediaType.AUDIO | p.MediaType.TRANSCRIPT == 9
    assert json.dumps({"x": p.StreamState.TERMINATED}) == '{"x": 4}'
