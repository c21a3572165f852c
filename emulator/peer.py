"""One accepted WebSocket of the emulator's RTMS server (signaling or media), as `Stream` uses it.

Server-to-client frames are written straight to the transport as whole, unmasked frames
(`emulator.wire`), bypassing the library's send path: the pacer writes many frames per wake-up
and they must never interleave with the library's own control frames.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

import rtms_protocol as rp
from emulator.wire import ws_text_frame

_OPEN = State.OPEN


class Peer:
    """One accepted WebSocket. Server-to-client frames are written straight to the transport
    (whole, unmasked frames, so they never interleave with the library's own control frames)."""

    __slots__ = ("ws", "protocol", "transport", "role", "_tasks")

    def __init__(self, ws: ServerConnection, role: str) -> None:
        self.ws = ws
        self.protocol = ws.protocol
        self.transport = ws.transport
        self.role = role  # "signaling", or the media URL key ("audio", ..., "all")
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open(self) -> bool:
        return self.protocol.state is _OPEN and not self.transport.is_closing()

    def write(self, data: bytes) -> bool:
        if self.protocol.state is not _OPEN or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def send(self, msg: rp.Message | str) -> bool:
        return self.write(ws_text_frame(msg if isinstance(msg, str) else rp.encode(msg)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a close frame (in the background)."""
        task = asyncio.ensure_future(self.ws.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees 1006)."""
        self.transport.abort()

    def ignore_pings(self) -> None:
        """Stop answering WebSocket pings (the library answers them inside its protocol object)."""
        protocol = self.protocol
        send_frame = protocol.send_frame

        def send_unless_pong(frame: Frame) -> None:
            if frame.opcode is not Opcode.PONG:
                send_frame(frame)

        protocol.send_frame = send_unless_pong  # type: ignore[method-assign]
