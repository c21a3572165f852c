"""What the SDK backend asks Zoom's SDK for, and what the SDK's callbacks mean, without I/O.

`sdk_plan` (media parameters from a `ClientConfig`), `join_status_decision` / `leave_decision` (judge
`on_join_confirm` / `on_leave`), `event_data` (an `on_event_ex` text as the raw backend's event value)."""

from __future__ import annotations

from dataclasses import dataclass

import rtms_protocol as proto
from ingest.backend import AudioParams, EventData, Participant, Product, VideoParams, video_mode
from ingest.rtms_client import ClientConfig
from ingest.rtms_values import event_name
from ingest.sdk_wire import SdkAudio, SdkDeskshare, SdkMedia, SdkTranscript, SdkVideo


@dataclass(frozen=True)
class SdkPlan:
    """The SDK media parameters for a `ClientConfig`, and the parameters recorded with frames."""

    media: SdkMedia
    audio: AudioParams
    video: VideoParams
    deskshare: VideoParams


def sdk_plan(config: ClientConfig) -> SdkPlan:
    """Ask the SDK for exactly what the raw backend asks for (`ClientConfig.media_params`): its
    defaults (OPUS 48 kHz stereo, 30 fps) differ from the protocol's (issue #92). The SDK does not
    expose Zoom's answer, so the recorded parameters are the requested ones. Raises ValueError for
    individual video, which this backend does not subscribe yet."""
    if config.video and config.video_individual:
        raise ValueError(
            "individual video (RTMSFLOW_RTMS_VIDEO_MODE=individual) needs the websocket backend: "
            "the SDK backend does not call subscribe_video yet"
        )
    a = config.media_params("audio").audio or proto.AudioParams()
    v = config.media_params("video").video or proto.VideoParams()
    d = config.media_params("deskshare").deskshare or proto.VideoParams(data_opt=None)
    t = config.media_params("transcript").transcript or proto.TranscriptParams()
    hz = proto.AudioSampleRate(a.sample_rate).hz
    media = SdkMedia(
        audio=SdkAudio(
            content_type=a.content_type,
            codec=a.codec,
            sample_rate=a.sample_rate,
            channel=a.channel,
            data_opt=a.data_opt,
            duration=a.send_rate,
            frame_size=hz * a.send_rate // 1000,
        )
        if config.audio
        else None,
        video=SdkVideo(
            content_type=v.content_type,
            codec=v.codec,
            resolution=v.resolution,
            data_opt=v.data_opt or proto.DataOption.VIDEO_SINGLE_ACTIVE_STREAM,
            fps=v.fps,
        )
        if config.video
        else None,
        deskshare=SdkDeskshare(d.content_type, d.codec, d.resolution, d.fps) if config.deskshare else None,
        transcript=SdkTranscript(t.src_language, t.enable_lid) if config.transcript else None,
    )

    def video_params(p: proto.VideoParams) -> VideoParams:
        width, height = proto.Resolution(p.resolution).size
        return VideoParams(
            codec=proto.PayloadType(p.codec).name,
            width=width,
            height=height,
            fps=p.fps,
            mode=video_mode(p.data_opt),
        )

    return SdkPlan(
        media=media,
        audio=AudioParams(
            codec=proto.PayloadType(a.codec).name,
            sample_rate=hz,
            channels=a.channel,
            send_rate_ms=a.send_rate,
            mixed=a.data_opt != proto.DataOption.AUDIO_MULTI_STREAMS,
        ),
        video=video_params(v),
        deskshare=video_params(d),
    )


def join_status_decision(status: int) -> str:
    """What an `on_join_confirm(status)` means: "ok", "retry" (status 8: the previous owner still
    holds the stream), "fatal" (any other RTMS status code, e.g. 3 bad signature), or "next" (a
    connection problem, try the next URL): SDK codes outside the RTMS table (610 TLS failure) and 1,
    which the SDK reports when its own connect retries give up (RTMS' 1, invalid message type, is
    not something a server says to a well-formed handshake)."""
    if status == proto.StatusCode.OK:
        return "ok"
    if status == proto.StatusCode.DUPLICATE_SIGNAL_REQUEST:
        return "retry"
    if status == proto.StatusCode.INVALID_MESSAGE_TYPE:
        return "next"
    if 0 < status <= max(proto.StatusCode):
        return "fatal"
    return "next"


def leave_decision(reason: int) -> tuple[str, int | None]:
    """What an `on_leave(reason)` means. The SDK calls it for STREAM_STATE TERMINATED with Zoom's
    stop reason (-1 when the message had none; the raw backend records 0 then) -> ("ended", reason);
    960 (a socket closed with a close frame, no TERMINATED) and other codes beyond the stop-reason
    table are a lost connection -> ("retry", None)."""
    if reason == -1:
        return "ended", 0
    if 0 <= reason <= max(proto.StopReason):
        return "ended", reason
    return "retry", None


def event_data(raw: str, product: Product) -> EventData:
    """An `on_event_ex` JSON text (the inner `event` of an EVENT_UPDATE) as the raw backend's value.
    The body is the EVENT_UPDATE rebuilt around the SDK's text (the SDK re-serializes it, so it is
    not Zoom's bytes). Raises `ProtocolError` for a malformed event."""
    obj = proto.decode_json('{"msg_type":6,"event":' + raw + "}") if raw.strip() else None
    if obj is None:
        raise proto.ProtocolError("bad_json", "event", "empty")
    ev = proto.EventUpdate.from_dict(obj)
    name = event_name(ev.event_type, product)
    return EventData(
        msg_type=proto.MsgType.EVENT_UPDATE,
        name=name,
        timestamp_ms=ev.timestamp,
        body='{"msg_type":6,"event":' + raw + "}",
        event_type=ev.event_type,
        participant_id=ev.user_id or 0,
        participant_name=ev.user_name or None,
        participants=tuple(Participant(p.user_id, p.user_name) for p in ev.participants or ()),
    )
