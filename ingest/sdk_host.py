"""`python -m ingest.sdk_host`: Zoom's RTMS SDK (`rtms`) in a process of its own.

Serves every SDK session of one ingest worker: commands on stdin, frames and callbacks on stdout
(`ingest.sdk_wire`). Every client call runs on its SDK loop's thread; one writer thread drains a bounded
queue to the pipe, so a slow worker blocks the SDK callbacks (backpressure). Why: docs/DECISIONS.md."""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from ingest.sdk_wire import (
    QUIT,
    JoinCommand,
    Kind,
    LeaveCommand,
    control,
    decode_command,
    media_header,
    reason_message,
)

# Events the typed SDK callbacks would subscribe to but never do (docs/PROTOCOL.md §8.3): we ask
# ourselves after every (re)join. 1 and 7 are always sent and must not be subscribed.
SUBSCRIBED_EVENTS = (2, 3, 4, 5, 6, 8, 9)
FIRST_PACKET_TIMESTAMP = 1
LEAVE_DRAIN_S = 0.1  # keep polling a leaving client this long before releasing it
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Outbox:
    """Bytes waiting for the pipe. `put` blocks while more than `limit` bytes are waiting."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, *chunks: bytes) -> None:
        with self._cond:
            while self._size >= self.limit and not self._closed:
                self._cond.wait()
            wake = not self._chunks  # the writer only sleeps on an empty queue
            self._chunks.extend(chunks)
            self._size += sum(len(c) for c in chunks)
            if wake:
                self._cond.notify_all()

    def run(self) -> None:
        """The writer thread: write whatever is queued, in order, until closed and drained."""
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if not self._chunks:
                    return
                chunks = list(self._chunks)
                self._chunks.clear()
                self._size = 0
                self._cond.notify_all()
            data = memoryview(b"".join(chunks))
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:
                os._exit(0)  # the worker is gone: nothing to deliver to

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _make_client_class(rtms: Any) -> type:
    """`rtms.Client` with the SDK's thread affinity respected for release and subscription."""

    class HostedClient(rtms.Client):  # type: ignore[misc,name-defined]
        def __init__(self, host: Host, sid: int) -> None:
            super().__init__()
            self.host = host
            self.sid = sid
            self.release_due = False  # leave asked (by the worker or by on_leave)
            self.release_at = 0.0  # monotonic time before which a due release waits (drain)
            self.subscribe_due = False
            self.first_packet_seen = False
            self.released = False

        def poll(self) -> None:
            if self.release_due and time.monotonic() >= self.release_at:
                self._release()
                return
            super().poll()
            if self.subscribe_due and not self.release_due:
                self.subscribe_due = False
                try:
                    self.subscribe_event(list(SUBSCRIBED_EVENTS))
                except Exception as exc:
                    self.host.error(self.sid, f"subscribe_event failed: {exc!r}")

        def _do_alloc_and_join(self) -> None:
            try:
                super()._do_alloc_and_join()
            except BaseException as exc:
                self.released = True
                self.host.error(self.sid, f"join failed: {exc!r}")
                self.host.left(self)
                raise

        def _release(self) -> None:
            self.release_due = False
            if self.released:
                return
            self.released = True
            try:
                self.leave()  # release(): on this, the owner thread, so the sockets really close
            except Exception as exc:
                self.host.error(self.sid, f"release failed: {exc!r}")
            self.host.left(self)

    return HostedClient


class Host:
    """The SDK clients of this process, by sid."""

    def __init__(self, rtms: Any, pool: Any, outbox: Outbox) -> None:
        self.rtms = rtms
        self.pool = pool
        self.outbox = outbox
        self.client_class = _make_client_class(rtms)
        self.clients: dict[int, Any] = {}
        self._lock = threading.Lock()

    def join(self, cmd: JoinCommand) -> None:
        rtms = self.rtms
        client = self.client_class(self, cmd.sid)
        sid = cmd.sid
        out = self.outbox
        media = cmd.media

        def on_join_confirm(reason: int) -> None:
            if reason == 0:
                client.subscribe_due = True  # not here: subscribe_event inside a callback deadlocks
                client.first_packet_seen = False
            out.put(reason_message(Kind.JOIN_CONFIRM, sid, reason))

        def on_leave(reason: int) -> None:
            # keep polling a moment: callbacks of what came with the TERMINATED may still be due
            client.release_at = time.monotonic() + LEAVE_DRAIN_S
            client.release_due = True
            out.put(reason_message(Kind.LEAVE, sid, reason))

        def on_event(raw: str) -> None:
            try:
                event_type = json.loads(raw).get("event_type")
            except (ValueError, AttributeError):
                event_type = None
            if event_type == FIRST_PACKET_TIMESTAMP:
                # Zoom sends it after every ready-ack. A second one means the SDK rejoined by itself
                # (after a TCP drop) without replaying any subscription: subscribe again.
                if client.first_packet_seen:
                    client.subscribe_due = True
                client.first_packet_seen = True
            out.put(control(Kind.EVENT, sid, raw.encode()))

        def media_cb(kind: Kind) -> Any:
            def cb(data: bytes, size: int, timestamp: int, md: Any) -> None:
                name = md.userName.encode()
                out.put(media_header(kind, sid, timestamp, md.userId, 0, 0, name, len(data)), data)

            return cb

        def on_transcript(data: bytes, size: int, timestamp: int, md: Any) -> None:
            name = md.userName.encode()
            head = media_header(
                Kind.TRANSCRIPT, sid, timestamp, md.userId, md.startTs, md.endTs, name, len(data)
            )
            out.put(head, data)

        client.on_join_confirm(on_join_confirm)
        client.on_leave(on_leave)
        client.on_event_ex(on_event)
        # never on_session_update: it segfaults inside poll() (docs/PROTOCOL.md §8.3)
        if media.audio is not None:
            client.set_audio_params(rtms.AudioParams(**asdict(media.audio)))
            client.on_audio_data(media_cb(Kind.AUDIO))
        if media.video is not None:
            client.set_video_params(rtms.VideoParams(**asdict(media.video)))
            client.on_video_data(media_cb(Kind.VIDEO))
        if media.deskshare is not None:
            client.set_deskshare_params(rtms.DeskshareParams(**asdict(media.deskshare)))
            client.on_deskshare_data(media_cb(Kind.DESKSHARE))
        if media.transcript is not None:
            params = rtms.TranscriptParams()
            params.src_language = media.transcript.src_language
            params.enable_lid = media.transcript.enable_lid
            client.set_transcript_params(params)
            client.on_transcript_data(on_transcript)
        with self._lock:
            self.clients[sid] = client
        self.pool.add(client)
        # The signature is ours (computed by the worker), so the SDK never reads ZM_RTMS_CLIENT /
        # ZM_RTMS_SECRET, which `generate_signature` would silently prefer over its arguments.
        client.join(
            meeting_uuid=cmd.meeting_uuid,
            rtms_stream_id=cmd.rtms_stream_id,
            server_urls=cmd.server_url,
            signature=cmd.signature,
        )

    def leave(self, sid: int) -> None:
        with self._lock:
            client = self.clients.get(sid)
        if client is None:
            self.outbox.put(control(Kind.LEFT, sid))
            return
        # Carried out by the client's own SDK thread, after polling a little longer: what Zoom sent
        # before we left (often the last events and the TERMINATED, when the stop came from a
        # webhook that overtook them) is still delivered.
        if not client.release_due:
            client.release_at = time.monotonic() + LEAVE_DRAIN_S
            client.release_due = True

    def left(self, client: Any) -> None:
        with self._lock:
            self.clients.pop(client.sid, None)
        self.outbox.put(control(Kind.LEFT, client.sid))

    def error(self, sid: int, text: str) -> None:
        self.outbox.put(control(Kind.ERROR, sid, text.encode()))

    def shutdown(self, timeout_s: float) -> None:
        """Leave every client (on its own thread) and wait up to `timeout_s` for the releases."""
        with self._lock:
            clients = list(self.clients.values())
        for client in clients:
            client.release_due = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self.clients:
                    break
            time.sleep(0.02)
        self.pool.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ingest.sdk_host", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="SDK event loop threads")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="SDK poll interval")
    parser.add_argument("--outbox-bytes", type=int, default=8 << 20, help="bound of the queue to the worker")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the host until stdin closes or `quit` arrives; never returns (exits with os._exit)."""
    args = _parse_args(argv)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints (rtms' logger, the C core) go to stderr, never into the pipe
    sys.stdout = sys.stderr
    faulthandler.enable()  # a crash of the C core leaves the Python stacks on stderr
    try:
        fcntl.fcntl(out_fd, _F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # a smaller pipe only means more wake-ups
    outbox = Outbox(out_fd, args.outbox_bytes)
    writer = threading.Thread(target=outbox.run, name="sdk-host-writer", daemon=True)
    writer.start()
    try:
        import importlib.metadata

        import rtms
    except ImportError as exc:
        outbox.put(
            control(
                Kind.ERROR, 0, f"Zoom's SDK is not installed ({exc}): pip install 'rtmsflow[sdk]'".encode()
            )
        )
        outbox.close()
        writer.join(5)
        os._exit(3)
    pool = rtms.EventLoopPool(threads=max(1, args.threads), poll_interval=args.poll_ms / 1000.0)
    for loop in pool.loops:
        loop.start()
    host = Host(rtms, pool, outbox)
    hello = {"pid": os.getpid(), "rtms": importlib.metadata.version("rtms")}
    outbox.put(control(Kind.HELLO, 0, json.dumps(hello).encode()))
    for line in sys.stdin.buffer:
        if line.strip() == QUIT.strip():
            break
        try:
            cmd = decode_command(line)
        except (ValueError, KeyError, TypeError) as exc:
            host.error(0, f"bad command {line[:200]!r}: {exc}")
            continue
        if cmd is None:
            break
        if isinstance(cmd, LeaveCommand):
            host.leave(cmd.sid)
            continue
        try:
            host.join(cmd)
        except Exception as exc:
            host.error(cmd.sid, f"join refused: {exc!r}")
            outbox.put(control(Kind.LEFT, cmd.sid))
    host.shutdown(timeout_s=5.0)
    outbox.close()
    writer.join(10)
    # os._exit: a normal interpreter exit with SDK threads alive ends in std::terminate (core dump)
    os._exit(0)


if __name__ == "__main__":
    main()
