"""Frames between the processes of a multi-model endpoint: a JSON head and a byte payload.

A frame is `>II` (the head's and the payload's lengths), the head (a JSON object, orjson) and the
payload. The processes are ours, but a model host runs a plugin's code, so a frame's sizes are
bounded on reading like any input: a peer that sends a bad frame is cut off.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import orjson

PREFIX = struct.Struct(">II")
MAX_HEAD_BYTES = 1 << 20
Head = dict[str, Any]


class FrameError(Exception):
    """A peer sent something that is not a frame (a bug or a corrupted process)."""


def encode(head: Head, payload: bytes | memoryview = b"") -> bytes:
    """One frame, ready to write."""
    data = orjson.dumps(head)
    return PREFIX.pack(len(data), len(payload)) + data + payload


class FrameBuffer:
    """Bytes as they arrive, cut into whole frames."""

    __slots__ = ("_buffer", "_max_payload")

    def __init__(self, max_payload: int) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    def feed(self, data: bytes) -> list[tuple[Head, bytes]]:
        """The frames completed by `data` (FrameError when the stream is not frames)."""
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= PREFIX.size:
            head_size, payload_size = PREFIX.unpack_from(buffer, start)
            if head_size > MAX_HEAD_BYTES or payload_size > self._max_payload:
                raise FrameError(f"a frame of {head_size} + {payload_size} bytes is over the bounds")
            end = start + PREFIX.size + head_size + payload_size
            if len(buffer) < end:
                break
            head_start = start + PREFIX.size
            try:
                head = orjson.loads(buffer[head_start : head_start + head_size])
            except orjson.JSONDecodeError as exc:
                raise FrameError(f"a frame's head is not JSON: {exc}") from None
            if not isinstance(head, dict):
                raise FrameError("a frame's head is not an object")
            frames.append((head, bytes(buffer[head_start + head_size : end])))
            start = end
        if start:
            del buffer[:start]
        return frames


class FrameProtocol(asyncio.Protocol):
    """An asyncio connection that reads and writes frames.

    `on_frame(head, payload)` is called on the event loop for each frame received, in order;
    `on_lost()` once, when the connection ends for any reason (the peer closed it, died, or sent
    a bad frame)."""

    def __init__(
        self,
        on_frame: Callable[[Head, bytes], None],
        on_lost: Callable[[], None],
        max_payload: int,
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._frames = FrameBuffer(max_payload)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have Transport's methods without being its subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except FrameError:
            if self.transport is not None:
                self.transport.abort()
            return
        for head, payload in frames:
            self._on_frame(head, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost()

    def send(self, head: Head, payload: bytes | memoryview = b"") -> bool:
        """Write one frame; False when the connection has ended."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(encode(head, payload))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect_frames(
    sock: socket.socket,
    on_frame: Callable[[Head, bytes], None],
    on_lost: Callable[[], None],
    max_payload: int,
) -> FrameProtocol:
    """A FrameProtocol over a connected socket (a socketpair's end, or one just connected)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: FrameProtocol(on_frame, on_lost, max_payload),
        sock=sock,
    )
    return protocol
