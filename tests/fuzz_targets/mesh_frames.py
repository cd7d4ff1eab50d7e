"""atheris target: the mesh frame decoder, with and without a valid tag.

    python tests/fuzz_targets/mesh_frames.py -max_total_time=600
"""

from __future__ import annotations

import _common

from hubd.radio import frames

KEY = bytes(range(32))
NODE = 0x1234ABCD


def test_one_input(data: bytes) -> None:
    for blob in (data, data + frames._tag(KEY, NODE, data)):  # the second reaches the parser
        try:
            frame = frames.decode(blob, KEY, NODE)
        except frames.FrameError:
            continue
        again = frames.decode(frames.encode(frame, KEY, NODE), KEY, NODE)
        assert again == frame, (frame, again)
    try:
        frames.load_key(data)
    except ValueError:
        pass


if __name__ == "__main__":
    _common.run(test_one_input)
