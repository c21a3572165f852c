"""Drive Zoom's official SDK (`rtms.Client`) against an RTMS URL and log every callback as a JSON line.

Run in a subprocess (the SDK's C core can crash its process) from a scratch directory with `logs/`:
`python tests/emulator/sdk_driver.py '{"server_urls": ..., "client": ..., "secret": ..., "out": ...}'`
(the keys: `main`'s argument). SDK calls are made from the main thread, never inside a callback."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from typing import Any


def main(args: dict[str, Any]) -> int:
    """Join with `args` (`server_urls`, `meeting_uuid`, `rtms_stream_id`, `client`, `secret`, `out`,
    `timeout_s`, `audio_data_opt`, `video_data_opt`, `subscribe_video`: user ids), one JSON line per
    callback in `out` (payloads as size + SHA-256). With `video_data_opt` 4 it calls
    `subscribe_video(uid, True)` for each once the join is confirmed. It registers `on_user_update` and
    `on_participant_video` before joining, never `on_session_update` (it can crash the SDK), and exits
    `linger_s` after `on_leave` (or at `timeout_s`)."""
    import rtms

    out = open(args["out"], "w", buffering=1)  # noqa: SIM115 - closed by os._exit's flush below
    lock = threading.Lock()
    left = threading.Event()
    joined = threading.Event()
    start = time.monotonic()

    def log(cb: str, **fields: Any) -> None:
        with lock:
            out.write(json.dumps({"t": round(time.monotonic() - start, 3), "cb": cb, **fields}) + "\n")

    def media(kind: str) -> Any:
        def callback(data: bytes, size: int, timestamp: int, md: Any) -> None:
            log(
                kind,
                size=size,
                ts=timestamp,
                uid=md.userId,
                name=md.userName,
                sha=hashlib.sha256(bytes(data)).hexdigest(),
                start=md.startTs,
                end=md.endTs,
                text=bytes(data).decode("utf-8", "replace") if kind == "transcript" else None,
            )

        return callback

    def on_leave(reason: int) -> None:
        log("leave", reason=reason)
        left.set()

    client = rtms.Client()

    def on_join_confirm(reason: int) -> None:
        log("join_confirm", reason=reason)
        joined.set()

    client.on_join_confirm(on_join_confirm)
    client.on_video_subscribed(
        lambda uid, status, error: log("video_subscribed", uid=uid, status=status, error=error)
    )
    client.on_leave(on_leave)
    client.on_user_update(lambda op, p: log("user_update", op=op, id=p.id, name=p.name))
    client.on_participant_video(lambda users, on: log("participant_video", users=list(users), on=on))
    client.on_event_ex(lambda raw: log("event", raw=json.loads(raw)))
    client.on_audio_data(media("audio"))
    client.on_video_data(media("video"))
    client.on_deskshare_data(media("deskshare"))
    client.on_transcript_data(media("transcript"))
    client.set_audio_params(
        rtms.AudioParams(
            content_type=2,
            codec=1,
            sample_rate=1,
            channel=1,
            data_opt=int(args.get("audio_data_opt", 1)),
            duration=20,
            frame_size=320,
        )
    )
    if "video_data_opt" in args:
        client.set_video_params(rtms.VideoParams(3, 7, 2, int(args["video_data_opt"]), 30))
    client.join(
        meeting_uuid=args["meeting_uuid"],
        rtms_stream_id=args["rtms_stream_id"],
        server_urls=args["server_urls"],
        client=args["client"],
        secret=args["secret"],
    )
    log("join_called")
    if args.get("subscribe_video") and joined.wait(float(args.get("timeout_s", 30))):
        for uid in args["subscribe_video"]:
            client.subscribe_video(int(uid), True)
            log("subscribe_video_called", uid=int(uid))
    left.wait(float(args.get("timeout_s", 30)))
    time.sleep(float(args.get("linger_s", 0.3)))
    log("done", left=left.is_set())
    out.flush()
    os._exit(0)  # skip the SDK's teardown: leave() keeps sockets open and exit-time cleanup can crash


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
