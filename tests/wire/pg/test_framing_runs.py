"""`MessageReader.next_run`: a run of same-type messages as one slice, mixed with
`next_message`, must hand out exactly the bytes and messages `next_message` alone would,
however the stream is split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.wire.pg import writers as w
from wardgate.wire.pg.framing import MessageReader, ProtocolError

D = ord("D")


def _stream() -> bytes:
    parts = [w.parameter_status("a", "b")]
    parts += [w.data_row([str(i).encode(), None, b"x" * (i % 7)]) for i in range(40)]
    parts.append(w.command_complete("SELECT 40"))
    parts += [w.data_row([b"again"]) for _ in range(3)]
    parts.append(w.ready_for_query("I"))
    return b"".join(parts)


def _consume(chunks: list[bytes]) -> tuple[bytes, int, list[int]]:
    """Feed chunks; use next_run after every DataRow. Returns (all raw bytes out, number
    of DataRows, types of the other messages)."""
    reader = MessageReader()
    out: list[bytes] = []
    rows = 0
    others: list[int] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (msg := reader.next_message()) is not None:
            out.append(msg[2])
            if msg[0] == D:
                rows += 1
                run = reader.next_run(D)
                if run is not None:
                    raw, count = run
                    assert count >= 1 and raw[0] == D
                    out.append(raw)
                    rows += count
            else:
                others.append(msg[0])
    assert reader.buffered == 0
    return b"".join(out), rows, others


def _reference(data: bytes) -> tuple[bytes, int, list[int]]:
    reader = MessageReader()
    reader.feed(data)
    msgs = list(reader)
    return (
        b"".join(m[2] for m in msgs),
        sum(1 for m in msgs if m[0] == D),
        [m[0] for m in msgs if m[0] != D],
    )


def test_one_chunk_gives_the_same_messages() -> None:
    data = _stream()
    assert _consume([data]) == _reference(data)


def test_every_two_piece_split() -> None:
    data = _stream()
    ref = _reference(data)
    for cut in range(1, len(data)):
        assert _consume([data[:cut], data[cut:]]) == ref


def test_one_byte_at_a_time() -> None:
    data = _stream()
    assert _consume([data[i : i + 1] for i in range(len(data))]) == _reference(data)


def test_run_is_one_slice_of_whole_messages() -> None:
    rows = [w.data_row([str(i).encode()]) for i in range(5)]
    reader = MessageReader()
    reader.feed(b"".join(rows) + w.command_complete("SELECT 5"))
    assert reader.next_run(D) == (b"".join(rows), 5)
    assert reader.next_run(D) is None  # CommandComplete is next
    assert reader.next_message()[0] == ord("C")
    assert reader.next_run(D) is None and reader.buffered == 0


def test_incomplete_message_ends_the_run() -> None:
    rows = [w.data_row([b"a" * 10]) for _ in range(3)]
    data = b"".join(rows)
    reader = MessageReader()
    reader.feed(data[:-3])
    assert reader.next_run(D) == (b"".join(rows[:2]), 2)
    assert reader.next_run(D) is None
    reader.feed(data[-3:])
    assert reader.next_message()[2] == rows[2]


def test_bad_length_is_left_to_next_message() -> None:
    good = w.data_row([b"ok"])
    bad = b"D" + (2).to_bytes(4, "big")
    reader = MessageReader()
    reader.feed(good + bad + b"zz")
    assert reader.next_run(D) == (good, 1)
    assert reader.next_run(D) is None
    with pytest.raises(ProtocolError):
        reader.next_message()
    with pytest.raises(ProtocolError):  # sticky
        reader.next_run(D)


def test_over_the_limit_is_left_to_next_message() -> None:
    reader = MessageReader(max_message_size=64)
    reader.feed(w.data_row([b"x"]) + w.data_row([b"y" * 100]))
    assert reader.next_run(D)[1] == 1
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_startup_phase_has_no_runs() -> None:
    reader = MessageReader(startup=True)
    reader.feed(w.data_row([b"x"]))
    assert reader.next_run(D) is None


_message = st.one_of(
    st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=4).map(w.data_row),
    st.text(max_size=8).map(lambda t: w.command_complete(t.replace("\x00", ""))),
    st.just(w.ready_for_query("I")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_message, max_size=30), st.lists(st.integers(1, 50), max_size=20))
def test_any_stream_any_split(messages: list[bytes], cuts: list[int]) -> None:
    data = b"".join(messages)
    chunks, pos = [], 0
    for c in cuts:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + c])
        pos += c
    chunks.append(data[pos:])
    assert _consume(chunks) == _reference(data)
