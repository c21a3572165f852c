"""`RtmsSocket`: one RTMS WebSocket on picows. Each whole message goes to a callback as soon as it is
parsed (no reader task, no queue); it does the closing handshake, pauses reading for backpressure and
reports the close code as websockets does (1005 no status, 1006 no close frame)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

logging.getLogger("picows").setLevel(logging.WARNING)  # it logs every connect and disconnect at INFO

CLOSE_TIMEOUT_S = 2.0  # after our close frame, how long the server has to answer before we hang up
NO_STATUS = 1005
ABNORMAL_CLOSURE = 1006

_TEXT, _BINARY, _CONTINUATION, _CLOSE = (
    WSMsgType.TEXT,
    WSMsgType.BINARY,
    WSMsgType.CONTINUATION,
    WSMsgType.CLOSE,
)


class RtmsSocket(WSListener):
    """Open with `await RtmsSocket.open(url, on_message, ...)`: `on_open(socket)` is called once the
    handshake is done, before any message; `on_message(socket, data)` gets each text message as str
    and each binary one as bytes, in order, until `detached` is set or the socket closes.
    `closed()` waits for the end and gives the close code."""

    def __init__(
        self,
        on_message: Callable[[RtmsSocket, str | bytes], None],
        max_message_bytes: int,
        on_open: Callable[[RtmsSocket], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_message = on_message
        self.on_open = on_open
        self.max_message_bytes = max_message_bytes
        self.transport: WSTransport | None = None
        self.detached = False  # our side gave the socket up: what still arrives is dropped
        self.paused = False
        self._assembling = False  # a fragmented message is being put together
        self._parts: list[bytes] = []
        self._parts_text = False
        self._parts_size = 0
        self._hang_up: asyncio.TimerHandle | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        on_message: Callable[[RtmsSocket, str | bytes], None],
        *,
        on_open: Callable[[RtmsSocket], None] | None = None,
        max_message_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
        user_agent: str = "rtmsflow",
    ) -> RtmsSocket:
        """Connect and do the opening handshake within `timeout_s` (TCP, TLS and HTTP together).
        Redirects are not followed: the URL was checked against the allowlist."""
        sock = cls(on_message, max_message_bytes, on_open)
        try:
            async with asyncio.timeout(timeout_s):
                await ws_connect(
                    lambda: sock,
                    url,
                    ssl_context=ssl_context,
                    websocket_handshake_timeout=None,
                    max_frame_size=max_message_bytes,
                    extra_headers={"User-Agent": user_agent},
                    max_redirects=0,
                    enable_auto_pong=True,
                )
        except BaseException:
            sock.abort()  # opened just before the time ran out, or cancelled: no connection left behind
            raise
        return sock

    # --- picows callbacks --------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.on_open is not None:
            self.on_open(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == _TEXT and frame.fin and not self._assembling:
            try:
                data: str | bytes = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                self._fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
                return
        elif kind == _CLOSE:
            self._on_close_frame(transport, frame)
            return
        elif kind == _BINARY or kind == _TEXT or kind == _CONTINUATION:
            assembled = self._assemble(kind, frame)
            if assembled is None:
                return
            data = assembled
        else:
            return  # PONG (PING is answered by picows)
        if not self.detached:
            self.on_message(self, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._hang_up is not None:
            self._hang_up.cancel()
            self._hang_up = None

    # --- what the owner does ---------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send a text message; nothing happens once the closing handshake has started."""
        if self.transport is not None:
            self.transport.send(_TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake: the socket ends when the server answers, or after
        `CLOSE_TIMEOUT_S`. Messages keep coming until then unless `detached` is set."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code))
        if self._hang_up is None:
            self._hang_up = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, transport.disconnect, False
            )

    def abort(self) -> None:
        """Drop the connection without a handshake."""
        if self.transport is not None:
            self.transport.disconnect(False)

    def pause(self) -> None:
        """Stop reading from the socket (the owner's inbox is full)."""
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.underlying_transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            if not self.transport.is_disconnected:
                self.transport.underlying_transport.resume_reading()

    async def closed(self) -> int:
        """Wait until the connection is gone; the close code the server sent (1005 if its close
        frame had none, 1006 if there was no close frame)."""
        assert self.transport is not None
        try:
            await self.transport.wait_disconnected()
        except Exception:  # a failure on our side (a protocol error found by picows): the code says it
            pass
        return self.close_code

    @property
    def close_code(self) -> int:
        handshake = self.transport.close_handshake if self.transport is not None else None
        if handshake is None or handshake.recv is None:
            return ABNORMAL_CLOSURE
        code: int = handshake.recv.code.value
        return code if code else NO_STATUS

    # --- inside ----------------------------------------------------------------------------------

    def _assemble(self, kind: WSMsgType, frame: WSFrame) -> str | bytes | None:
        """Put fragmented messages together (RFC 6455 §5.4); the whole message once its last frame
        came, else None."""
        if kind == _CONTINUATION:
            if not self._assembling:
                self._fail(WSCloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
                return None
        elif self._assembling:
            self._fail(WSCloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            return None
        else:
            self._assembling, self._parts_text = True, kind == _TEXT
        payload = frame.get_payload_as_bytes()
        self._parts_size += len(payload)
        if self._parts_size > self.max_message_bytes:
            self._fail(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            return None
        self._parts.append(payload)
        if not frame.fin:
            return None
        whole = b"".join(self._parts)
        text = self._parts_text
        self._assembling, self._parts, self._parts_size = False, [], 0
        if not text:
            return whole
        try:
            return whole.decode()
        except UnicodeDecodeError:
            self._fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
            return None

    def _on_close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """The server's close frame: answer it (echoing its code) unless we started, then hang up."""
        if not transport.is_close_frame_sent:
            code = frame.get_close_code()
            transport.send_close(code if code.value else WSCloseCode.OK)
        transport.disconnect()

    def _fail(self, code: WSCloseCode, reason: str) -> None:
        """A protocol violation by the server: close with `code` and drop the connection."""
        self.detached = True
        if self.transport is not None:
            self.transport.send_close(code, reason.encode())
            self.transport.disconnect()
