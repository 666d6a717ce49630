"""The app's uvicorn WebSocket protocol: uvicorn's websockets-sansio one, which also writes the frames the
engine fans out as the same bytes to every socket, framed once.

A server's frames are never masked, so a frame sent to a thousand sockets is the same bytes on each of
them. uvicorn's `send` encodes the text and builds the frame again for every socket, behind an awaited
event and an ASGI message; that was most of the time an instance spent fanning out (docs/PERFORMANCE.md,
"Frames framed once"). `FrameWritingProtocol` offers the app, in the scope's `extensions` under
`WRITE_NOW`, a plain call that writes whole frames to the socket at once, several in one write (one system
call for the frames of the fan-outs that came for a socket meanwhile), their bytes kept by
`PreparedFrames` for the next sockets. It declines, and the frames go through uvicorn's `send` as before,
whenever that `send` would do more than write: the socket's buffer is over its high-water mark (the `send`
waits for it to drain), a close was sent or received, the connection is lost, or permessage-deflate was
negotiated (`WS_COMPRESSION=deflate`: the `send` compresses each frame with the connection's own context).
Everything else, the handshake, the close, pings and what is received, is uvicorn's.

`serve` runs the app with it; under another protocol the scope has no `WRITE_NOW` and every frame goes
through the server's `send`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .realtime import WRITE_NOW

__all__ = ["FrameWritingProtocol", "PreparedFrames"]


class PreparedFrames:
    """The bytes on the wire of the last `entries` frames written, each framed once for every socket.

    Frames are kept by value, so a frame is found whichever connection's queue it comes from; frames over
    `max_frame_bytes` are framed each time rather than kept, which bounds what is held, and so are those
    written to one socket alone (`kept=False`).
    """

    def __init__(self, *, entries: int = 64, max_frame_bytes: int = 64 * 1024) -> None:
        if entries < 1 or max_frame_bytes < 0:
            raise ValueError("entries must be at least 1 and max_frame_bytes not negative")
        self.entries = entries
        self.max_frame_bytes = max_frame_bytes
        self._wire: OrderedDict[str | bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._wire)

    def wire(self, frame: str | bytes, *, kept: bool = True) -> bytes:
        """The unmasked WebSocket frame (text for a `str`, binary for `bytes`) that carries `frame` whole."""
        wire = self._wire.get(frame)
        if wire is None:
            if isinstance(frame, str):
                payload, opcode = frame.encode(), Opcode.TEXT
            else:
                payload, opcode = frame, Opcode.BINARY
            wire = Frame(opcode, payload).serialize(mask=False)
            if kept and len(payload) <= self.max_frame_bytes:
                if len(self._wire) >= self.entries:
                    self._wire.popitem(last=False)  # the oldest: its fan-out is over by then
                self._wire[frame] = wire
        return wire


class FrameWritingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with `write_now` in each scope's `extensions` (see the module)."""

    prepared = PreparedFrames()
    """Shared by the connections of a process: a fan-out writes one frame to many of them in turn."""

    async def run_asgi(self) -> None:
        extensions = cast(dict[str, object], self.scope["extensions"])
        extensions[WRITE_NOW] = self.write_now
        await super().run_asgi()

    def write_now(self, *frames: str | bytes, fanned_out: bool = True) -> bool:
        """Write `frames` to the socket now, in one write, and say True; or False, having written nothing,
        when they must go through `send` (see the module). Frames not `fanned_out` are not kept for other
        sockets."""
        if (
            self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        wire = self.prepared.wire
        if len(frames) == 1:
            self.transport.write(wire(frames[0], kept=fanned_out))
        else:
            self.transport.write(b"".join([wire(frame, kept=fanned_out) for frame in frames]))
        return True
