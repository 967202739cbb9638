"""Property tests: arbitrary bytes give messages or a ProtocolError, never anything else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wardgate.wire.pg import auth as a
from wardgate.wire.pg import backend as b
from wardgate.wire.pg import frontend as f
from wardgate.wire.pg import messages as m
from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError

from .test_roundtrip import BACKEND, FRONTEND

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIGHT = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Streams of valid messages with noise spliced in reach deeper than uniform noise.
_VALID = [w.encode(x) for x in BACKEND + FRONTEND]
streams = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda parts, noise, at: (lambda s: s[:at] + noise + s[at:])(b"".join(parts)),
        st.lists(st.sampled_from(_VALID), max_size=8),
        st.binary(max_size=8),
        st.integers(0, 400),
    ),
)

DECODERS: list[Callable[[bytes], object]] = [
    f.decode_startup,
    f.decode_query,
    f.decode_parse,
    f.decode_bind,
    f.decode_execute,
    f.decode_describe,
    f.decode_close,
    f.decode_sync,
    f.decode_flush,
    f.decode_terminate,
    f.decode_password,
    f.decode_cleartext_password,
    f.decode_sasl_initial,
    f.decode_sasl_initial_message,
    f.decode_sasl_response,
    f.decode_function_call,
    f.decode_copy_data,
    f.decode_copy_done,
    f.decode_copy_fail,
    b.decode_authentication,
    b.decode_sasl_mechanisms,
    b.decode_parameter_status,
    b.decode_backend_key_data,
    b.decode_ready_for_query,
    b.decode_row_description,
    b.decode_data_row,
    b.decode_command_complete,
    b.decode_fields,
    b.decode_error_response,
    b.decode_notice_response,
    b.decode_notification_response,
    b.decode_parameter_description,
    b.decode_copy_in_response,
    b.decode_copy_out_response,
    b.decode_copy_both_response,
    b.decode_negotiate_protocol_version,
    b.decode_function_call_response,
]

# Bodies that start like real messages reach deeper code than uniform noise does.
bodies = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [b"\0\x03\0\0", b"\0\x01", b"\0\x02", b"\0\0\0\x0a", b"S\0", b"P\0", b"s\0q\0"]
        ),
        st.binary(max_size=40),
    ),
)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@LIGHT
@given(body=bodies)
def test_decoders_raise_only_protocol_error(decode: Callable[[bytes], object], body: bytes) -> None:
    try:
        decode(body)
    except ProtocolError:
        pass
    try:
        decode(memoryview(body))
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6),
    startup=st.booleans(),
    limit=st.integers(min_value=0, max_value=600),
)
def test_reader_gives_messages_or_protocol_error(
    data: bytes, cuts: list[int], startup: bool, limit: int
) -> None:
    r = MessageReader(startup=startup, max_message_size=limit)
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    got: list[bytes] = []
    try:
        for lo, hi in zip(edges, edges[1:], strict=False):
            r.feed(data[lo:hi])
            for _ in range(len(data) + 2):  # bounded: never hangs
                msg = r.next_message()
                if msg is None:
                    break
                t, body, raw = msg
                got.append(raw)
                assert len(raw) <= len(data)
                try:
                    (f.decode_frontend if t == 0 else b.decode_backend)(t, body)
                except ProtocolError:
                    pass
            else:
                raise AssertionError("next_message never returned None")
    except ProtocolError:
        return
    assert b"".join(got) + r.take_remaining() == data


@given(length=st.integers(min_value=1025, max_value=2**32 - 1), t=st.integers(1, 255))
@settings(max_examples=100, deadline=None)
def test_oversized_length_raises(length: int, t: int) -> None:
    r = MessageReader(max_message_size=1024)
    r.feed(bytes([t]) + length.to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        r.next_message()


text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)
values = st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=8)


@FAST
@given(portal=text, stmt=text, params=values, fmts=st.lists(st.sampled_from([0, 1]), max_size=3))
def test_bind_roundtrip_property(portal: str, stmt: str, params: list, fmts: list) -> None:
    pf = tuple(fmts[:1]) if len(fmts) != len(params) else tuple(fmts)
    msg = m.Bind(portal, stmt, pf, tuple(params), tuple(fmts))
    raw = w.encode(msg)
    r = MessageReader()
    r.feed(raw)
    t, body, got = r.next_message()
    assert got == raw and f.decode_frontend(t, body) == msg


@FAST
@given(row=values)
def test_data_row_roundtrip_property(row: list) -> None:
    assert b.decode_data_row(w.data_row(row)[5:]) == row


@FAST
@given(params=st.dictionaries(text.filter(bool), text, max_size=6))
def test_startup_roundtrip_property(params: dict[str, str]) -> None:
    raw = w.startup_message(params)
    r = MessageReader(startup=True)
    r.feed(raw)
    t, body, _ = r.next_message()
    assert f.decode_startup(body) == m.StartupMessage(196608, params)


_FIRST = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda x: b"n,,n=," + x, st.binary(max_size=40)),
    st.builds(lambda x: b"n,,n=,r=abc" + x, st.binary(max_size=10)),
)
_FINAL = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda x: b"c=biws,r=abc" + x, st.binary(max_size=80)),
)


@FAST
@given(first=_FIRST, final=_FINAL)
def test_scram_server_raises_only_clean_errors(first: bytes, final: bytes) -> None:
    server = a.ScramServer(a.make_scram_verifier("pw", iterations=1, salt=b"s" * 16))
    try:
        server.handle_client_first(first)
        server.handle_client_final(final)
    except (ProtocolError, a.AuthenticationFailed):
        return
    raise AssertionError("random bytes authenticated")
