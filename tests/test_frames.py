"""The frames between a multi-model endpoint's processes: a model host runs a plugin's code, so a
frame is bounded and checked on reading like any input."""

from __future__ import annotations

import struct

import pytest

from sagecraft.serving.frames import MAX_HEAD_BYTES, FrameBuffer, FrameError, encode


def test_frames_split_anywhere_come_back_whole_and_in_order() -> None:
    data = encode({"id": 1}, b"abc") + encode({"id": 2}, b"") + encode({"id": 3}, b"x" * 1000)
    frames = FrameBuffer(4096)
    got = []
    for start in range(0, len(data), 7):
        got += frames.feed(data[start : start + 7])
    assert got == [({"id": 1}, b"abc"), ({"id": 2}, b""), ({"id": 3}, b"x" * 1000)]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (struct.pack(">II", 10, 5000) + b"{}", "over the bounds"),  # payload past the bound
        (struct.pack(">II", MAX_HEAD_BYTES + 1, 0), "over the bounds"),  # a head of 1 MiB + 1
        (struct.pack(">II", 3, 0) + b"{x}", "not JSON"),
        (struct.pack(">II", 2, 0) + b"[]", "not an object"),
    ],
)
def test_a_bad_frame_is_refused_before_its_bytes_are_kept(data: bytes, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        FrameBuffer(4096).feed(data)
