"""The mesh frame codec: sizes, authentication, replay window, and property tests."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd.radio import frames
from hubd.radio.frames import (
    ALERT_TYPES,
    Frame,
    FrameAuthError,
    FrameError,
    FrameFormatError,
    FrameReplayError,
    FrameType,
    ReplayWindow,
)
from hubd.radio.mesh_airtime import AirtimeBudget, packet_airtime

KEY = bytes(range(32))
NODE = 0xA1B2C3D4

hub_ids = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
alert_frames = st.builds(
    lambda t, origin, time_, seq, age, kind, level, outcome, silent, uplink, zone: Frame(
        t, origin, time_, seq=seq, age=min(age, time_), kind=kind, level=level,
        outcome=(outcome or "genuine") if t == FrameType.RESOLVED else outcome, silent=silent,
        uplink=uplink, zone=zone),
    st.sampled_from(sorted(ALERT_TYPES)), hub_ids, st.integers(0, 2**32 - 1), st.integers(0, 2**24 - 1),
    st.integers(0, 2**16 - 1), st.sampled_from(frames.KINDS), st.integers(0, 7),
    st.sampled_from(frames.OUTCOMES), st.booleans(), st.booleans(), st.text(max_size=30))
beacons = st.builds(lambda o, t, u, n: Frame(FrameType.BEACON, o, t, uplink=u, open_alerts=n),
                    hub_ids, st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 255))
haves = st.builds(lambda o, t, s, r, lv: Frame(FrameType.HAVE, o, t, seq=s, ref_type=r, level=lv),
                  hub_ids, st.integers(0, 2**32 - 1), st.integers(0, 2**24 - 1),
                  st.sampled_from(sorted(ALERT_TYPES)), st.integers(0, 7))


def _expected(frame: Frame, data: bytes) -> Frame:
    """What must come back: the zone as far as it fit, everything else exactly."""
    if frame.type not in ALERT_TYPES:
        return frame
    zone_len = len(data) - frames.TAG_LEN - (21 - frames.TAG_LEN + len(frame.origin))
    zone = frame.zone.encode()[:zone_len].decode("utf-8", "ignore")
    assert frame.zone.startswith(zone)
    return Frame(**{**frame.__dict__, "zone": zone})


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(alert_frames, beacons, haves), st.integers(0, 2**32 - 1))
def test_round_trip(frame: Frame, node: int) -> None:
    data = frames.encode(frame, KEY, node)
    assert frames.decode(data, KEY, node) == _expected(frame, data)
    if frame.type in ALERT_TYPES:
        assert len(data) <= frames.MAX_ALERT_FRAME


@settings(max_examples=1000, deadline=None, database=None)
@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_arbitrary_bytes_raise_only_the_typed_error(data: bytes, node: int) -> None:
    try:
        frames.decode(data, KEY, node)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None, database=None)
@given(alert_frames, st.data())
def test_any_altered_byte_is_refused(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(frames.encode(frame, KEY, NODE))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        frames.decode(bytes(raw), KEY, NODE)


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(alert_frames, beacons, haves), st.binary(max_size=40))
def test_authentic_frames_with_garbage_never_escape(frame: Frame, tail: bytes) -> None:
    """Well-authenticated but malformed bodies (a key holder's bug) are typed errors too."""
    body = frames.encode(frame, KEY, NODE)[:-frames.TAG_LEN] + tail
    data = body + frames._tag(KEY, NODE, body)
    try:
        frames.decode(data, KEY, NODE)
    except FrameError:
        pass


def _raise_frame(**kw) -> Frame:
    base = dict(seq=12, age=5, kind="panic", level=0, zone="Market gate")
    return Frame(FrameType.RAISED, "hub-1", 1_800_000_000, **{**base, **kw})


def test_a_realistic_alert_frame_is_small_and_fast() -> None:
    data = frames.encode(_raise_frame(), KEY, NODE)
    assert len(data) == 21 + len("hub-1") + len("Market gate")
    assert len(data) <= 40
    assert packet_airtime(len(data)) < 0.75  # seconds on LongFast


def test_long_zone_is_cut_to_fit_not_refused() -> None:
    frame = _raise_frame(zone="Ünïcödé market gate on the north side")
    data = frames.encode(frame, KEY, NODE)
    assert len(data) <= 40
    zone = frames.decode(data, KEY, NODE).zone
    assert zone and frame.zone.startswith(zone)


def test_wrong_key_is_forged() -> None:
    data = frames.encode(_raise_frame(), KEY, NODE)
    with pytest.raises(FrameAuthError):
        frames.decode(data, bytes(32), NODE)


def test_frame_bound_to_transmitting_node() -> None:
    data = frames.encode(_raise_frame(), KEY, NODE)
    with pytest.raises(FrameAuthError):
        frames.decode(data, KEY, NODE + 1)


@pytest.mark.parametrize("data, error", [
    (b"", FrameFormatError), (b"\x11\x05hub-1", FrameFormatError),
    (bytes([0x21]) + bytes(30), FrameFormatError),  # version 2
    (bytes(range(40)), FrameFormatError),
])
def test_truncated_and_unknown_frames(data: bytes, error: type) -> None:
    with pytest.raises(error):
        frames.decode(data, KEY, NODE)


def test_hub_ids_longer_than_16_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        frames.encode(Frame(FrameType.BEACON, "a-very-long-hub-identifier", 0), KEY, NODE)


def test_replay_window() -> None:
    w = ReplayWindow(window=600, forget_after=3600)
    w.check(NODE, 1000, b"tag-1", now=0)
    with pytest.raises(FrameReplayError, match="heard before"):
        w.check(NODE, 1000, b"tag-1", now=1)
    w.check(NODE, 2000, b"tag-2", now=2)
    with pytest.raises(FrameReplayError, match="stale"):
        w.check(NODE, 1300, b"tag-3", now=3)
    w.check(NODE, 1500, b"tag-4", now=4)  # inside the window: reordering is fine
    w.check(NODE + 1, 1000, b"tag-1", now=5)  # another node, its own history
    w.check(NODE, 100, b"tag-5", now=4000)  # unheard for an hour: a reset clock recovers


def test_load_key_hex_and_base64() -> None:
    assert frames.load_key(KEY.hex() + "\n") == KEY
    assert frames.load_key(base64.b64encode(KEY).decode()) == KEY
    with pytest.raises(ValueError, match="at least 16"):
        frames.load_key("abcd")
    with pytest.raises(ValueError, match="hex or base64"):
        frames.load_key("not a key!")


def test_airtime_matches_the_published_longfast_figures() -> None:
    assert packet_airtime(10) == pytest.approx(0.5, abs=0.05)
    assert packet_airtime(50) == pytest.approx(0.8, abs=0.05)


def test_budget_keeps_room_for_alerts() -> None:
    t = [0.0]
    b = AirtimeBudget(0.1, window=100, clock=lambda: t[0])  # 10 s of airtime per 100 s
    while b.allows("beacon", 1.0):
        b.spend(1.0)
    assert b.used() == pytest.approx(5.0)
    assert b.allows("retry", 1.0) and b.allows("alert", 1.0)
    while b.allows("retry", 1.0):
        b.spend(1.0)
    assert b.allows("alert", 1.0) and not b.allows("beacon", 0.1)
    b.spend(1.0)
    assert not b.allows("alert", 0.5)  # never past the duty cycle
    t[0] = 101.0
    assert b.allows("beacon", 1.0)
