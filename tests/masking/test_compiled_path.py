"""The compiled (Hyperscan) path finds and masks exactly what the pure-Python path does.

Three layers are compared side by side: the pre-filter itself (every position
where a digit-pass pattern matches must be a reported candidate for it), the
scanner (`spans` against `spans_python` over the labelled Faker set and
generated text), and the masker (the body path of `mask_data_row` against the
value path with a pure-Python scanner, values and summaries). Then the
fallback and the failure modes: without Hyperscan everything still masks, and
an error in the compiled path refuses the row.
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.masking import (
    BASELINE_MASK,
    ColumnInfo,
    MaskingConfig,
    MaskingEngine,
    MaskingError,
    fastscan,
)
from wardgate.masking.masker import ResultMasker, decode_data_row, encode_data_row
from wardgate.masking.recognizers import BUILTIN_ENTITIES, builtin_recognizers, custom_recognizer
from wardgate.masking.scanner import Scanner
from wardgate.pipeline.command import MaskDirective

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pii_dataset import MIXED_COLUMNS, generate, mixed_rows  # noqa: E402

pytestmark = pytest.mark.skipif(not fastscan.AVAILABLE, reason="hyperscan is not installed")

ALL_RECS = [r for e in BUILTIN_ENTITIES for r in builtin_recognizers(e)]
ALL = MaskDirective("test/all", entities=("*",), strategy="default")
PIECES = [
    "4111 1111 1111 1111", "4111111111111111", "378282246310005", "6011-0009-9013-9424",
    "jane@example.com", "078-05-1120", "219-09-9999", "219 09 9999", "219.09.9999",
    "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "NO9386011117947",
    "password=hunter2", "PWD: x", "'secret': 'abc'", "postgres://u:pw@h/db",
    "AKIAIOSFODNN7EXAMPLE", "10.0.0.1", "192.168.001.1", "::1", "fe80::1%eth0",
    "(555) 123-4567", "+44 20 7946 0958", "-----BEGIN PRIVATE KEY-----\nabc",
    "-----END PRIVATE KEY-----", "ghp_" + "a" * 36, "xoxb-1234567890-abc",
    "sk_live_" + "b" * 24, "eyJhbGciOi.eyJzdWIiOi.sig", " ", "-", ".", "@", ":", "=", "'",
    '"', "0", "1", "12", "123", "1234", "DE", "AB12", "x", "é", "\t", "\n", "\x00",
]  # fmt: skip


def _scanners(recs) -> tuple[Scanner, Scanner]:
    fast = Scanner(recs, compiled=True)
    slow = Scanner(recs, compiled=False)
    assert fast.compiled and not slow.compiled
    return fast, slow


@pytest.mark.parametrize("entity", [None, *BUILTIN_ENTITIES])
def test_labelled_set_compiled_equals_python(entity) -> None:
    recs = ALL_RECS if entity is None else list(builtin_recognizers(entity))
    fast, slow = _scanners(recs)
    samples = generate(per_type=150, seed=99)
    found = 0
    for sample in samples:
        data = sample.text.encode()
        expected = slow.spans(data)
        assert fast.spans(data) == expected, sample.text
        found += len(expected)
    assert found > 0


text_st = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(alphabet="0123456789 -.:ABDEGNOZ@x", max_size=30)),
    max_size=10,
).map(lambda p: "".join(p).encode())


@settings(max_examples=400, deadline=None)
@given(text_st)
def test_property_spans_equal(data: bytes) -> None:
    fast, slow = _scanners(ALL_RECS)
    assert fast.spans(data) == slow.spans(data)
    assert fast.spans_padded(b"\x00" + data) == slow.spans(b"\x00" + data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | text_st)
def test_property_candidates_cover_every_digit_match(data: bytes) -> None:
    """The pre-filter's superset property, checked directly for each digit recognizer."""
    fast = Scanner(ALL_RECS, compiled=True)
    recs = fast._digit_recs
    cands, _gates = fast._pre.scan(b"\x00" + data, 1)  # type: ignore[union-attr]
    run_start = re.compile(rb"[0-9](?<![0-9][0-9])")
    for at in range(len(data)):
        if not run_start.match(data, at):
            continue
        for k, rec in enumerate(recs):
            if rec.compiled.match(data, at):
                assert cands.get(at, 0) >> k & 1, (rec.entity, at, data)


def test_custom_entities_run_in_python_and_still_work() -> None:
    emp = custom_recognizer("EMPLOYEE_ID", regex=r"^EMP-\d{6}")
    words = custom_recognizer("PROJECT", words=["Bluebird", "Nightjar"])
    recs = [*ALL_RECS, emp, words]
    fast, slow = _scanners(recs)
    for data in (
        b"EMP-123456 on bluebird, card 4111111111111111",
        b"x EMP-123456 NIGHTJAR",
        b"EMP-12\x0034 jane@example.com",
    ):
        assert fast.spans(data) == slow.spans(data)
    assert fast.spans(b"EMP-123456 x")[0][0] == "EMPLOYEE_ID"
    assert [f[0] for f in fast.spans(b"on Bluebird.")] == ["PROJECT"]


# -- the masker's body path -------------------------------------------------------------


def _maskers(engine: MaskingEngine, directives, columns) -> tuple[ResultMasker, ResultMasker]:
    fast = engine.plan(directives, columns)
    slow = engine.plan(directives, columns)
    assert fast is not None and slow is not None
    assert fast._body_path
    fast._cache = None  # the body path from the first row (the cache decides first)
    fast._native = slow._native = None  # the Python paths (test_native_path.py: the C one)
    # the reference: values decoded, one pure-Python scan per row, no value cache
    pure = Scanner(slow._scanner.recognizers, compiled=False)  # type: ignore[union-attr]
    slow._scanner = pure
    slow._find = pure.spans
    slow._cache = None
    slow._body_path = False
    return fast, slow


def _compare(fast: ResultMasker, slow: ResultMasker, rows) -> int:
    changed = 0
    for values in rows:
        body = encode_data_row(values)
        a = fast.mask_data_row(body)
        assert a == slow.mask_data_row(body)
        changed += a != body
        if a == body:
            assert a is body  # nothing to mask: the very message is forwarded
    assert fast.summary() == slow.summary()
    return changed


def test_mixed_rows_body_path_equals_value_path() -> None:
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    fast, slow = _maskers(engine, [BASELINE_MASK], columns)
    assert _compare(fast, slow, mixed_rows(400, seed=12)) == 400
    assert fast.summary()["columns"]["card"]["CREDIT_CARD"] == 400


def test_rules_nulls_and_null_on_finding_columns() -> None:
    engine = MaskingEngine(MaskingConfig(phone=True), token_key=b"k")
    directives = [
        ALL,
        MaskDirective("test/cols", columns=("*.ssn", "t.amount", "t.doc"), strategy="partial"),
    ]
    columns = [
        ColumnInfo("id", "t", 23),
        ColumnInfo("note", "t", 25),
        ColumnInfo("ssn", "t", 1043),
        ColumnInfo("amount", "t", 1700),  # rule on a numeric: NULL
        ColumnInfo("doc", "t", 114),  # rule on json: a JSON string
        ColumnInfo("num", "t", 1700),  # a finding in a numeric: NULL
        ColumnInfo("addr", "t", 869, 0),  # inet: not text-like, null on finding
    ]
    fast, slow = _maskers(engine, directives, columns)
    rows = [
        [b"1", b"mail jane@example.com", b"219-09-9999", b"12.50", b'{"a": 1}', b"5", b"10.0.0.1"],
        [None, None, None, None, None, None, None],
        [b"2", b"", b"x", b"0", b"{}", b"4111111111111111", b"::1"],
        [b"3", b"card 4111 1111 1111 1111 and 378282246310005", None, b"1", None, b"7", None],
    ]
    assert _compare(fast, slow, rows) == 3
    nulled = fast.summary()["nulled"]
    assert nulled["amount"] == 3 and nulled["num"] == 1 and nulled["addr"] == 2


row_st = st.lists(
    st.one_of(st.none(), text_st, st.binary(max_size=20).map(lambda b: b.replace(b"\x00", b""))),
    min_size=5,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(row_st, min_size=1, max_size=8))
def test_property_body_path_equals_value_path(rows) -> None:
    engine = MaskingEngine(MaskingConfig(phone=True), token_key=b"k")
    columns = [
        ColumnInfo("a", "t", 25),
        ColumnInfo("b", "t", 1043),
        ColumnInfo("c", "t", 23),  # int4: skipped
        ColumnInfo("d", "t", 1700),
        ColumnInfo("secret", "t", 25),
    ]
    directives = [ALL, MaskDirective("test/col", columns=("t.secret",), strategy="redact")]
    fast, slow = _maskers(engine, directives, columns)
    _compare(fast, slow, rows)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\xff\xff",
        b"\x00\x02\x00\x00\x00\x01a",
        b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x05ab",
        b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xfe",
        b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xffX",
        b"\x00\x03\x00\x00\x00\x01a\xff\xff\xff\xff\xff\xff\xff\xff",
    ],
)
def test_malformed_rows_raise_the_same_error(body: bytes) -> None:
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    fast, slow = _maskers(engine, [BASELINE_MASK], [ColumnInfo("a", None, 25)] * 2)
    with pytest.raises(MaskingError) as a:
        fast.mask_data_row(body)
    with pytest.raises(MaskingError) as b:
        slow.mask_data_row(body)
    assert str(a.value) == str(b.value)


def test_compiled_failure_refuses_the_row(monkeypatch) -> None:
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    masker = engine.plan([BASELINE_MASK], [ColumnInfo("a", None, 25)])
    assert masker is not None and masker._body_path

    class Broken:
        def scan(self, *args, **kwargs):
            raise fastscan._hs.error("scratch in use")  # type: ignore[union-attr]

    monkeypatch.setattr(masker._scanner._pre, "_db", Broken())  # type: ignore[union-attr]
    masker._native = None  # the C row masker would not reach the pre-filter
    body = encode_data_row([b"jane@example.com"])
    with pytest.raises(MaskingError) as err:
        masker.mask_data_row(body)
    assert "jane" not in str(err.value)


def test_fallback_without_hyperscan_masks_the_same(monkeypatch) -> None:
    monkeypatch.setattr(fastscan, "AVAILABLE", False)
    fastscan._CACHE.clear()
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    masker = engine.plan([BASELINE_MASK], columns)
    assert masker is not None and not masker._body_path
    assert not masker._scanner.compiled  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        Scanner(ALL_RECS, compiled=True)
    monkeypatch.setattr(fastscan, "AVAILABLE", True)
    compiled_engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    other = compiled_engine.plan([BASELINE_MASK], columns)
    assert other is not None and other._body_path
    masker._native = other._native = None  # the two Python paths
    for values in mixed_rows(100, seed=4):
        body = encode_data_row(values)
        assert masker.mask_data_row(body) == other.mask_data_row(body)
    assert masker.summary() == other.summary()


def test_other_threads_scan_with_their_own_scratch() -> None:
    fast = Scanner(ALL_RECS, compiled=True)
    data = b"card 4111111111111111 ssn 219-09-9999 mail jane@example.com"
    expected = fast.spans(data)
    results: list[list] = []

    def work() -> None:
        results.append([fast.spans(data) for _ in range(50)][-1])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_cache_first_then_body_path_after_the_probe_drops_it() -> None:
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    masker = engine.plan([BASELINE_MASK], columns)
    _unused, reference = _maskers(engine, [BASELINE_MASK], columns)
    assert masker is not None and masker._cache is not None
    masker._native = None  # the Python path's cache (C has none)
    rows = mixed_rows(200, seed=21)
    for values in rows:
        body = encode_data_row(values)
        assert masker.mask_data_row(body) == reference.mask_data_row(body)
    assert masker._cache is None  # distinct values: dropped, the body path took over
    assert masker.summary() == reference.summary()


def test_decode_still_matches_body_offsets() -> None:
    values = [b"a", None, b"", b"jane@example.com"]
    assert decode_data_row(encode_data_row(values)) == values


def test_import_failure_falls_back_to_python_with_the_same_output() -> None:
    """A process where `import hyperscan` fails masks the same rows to the same bytes."""
    import pickle
    import subprocess

    bodies = [encode_data_row(r) for r in mixed_rows(120, seed=8)]
    script = (
        "import pickle, sys\n"
        "sys.modules['hyperscan'] = None  # the import fails\n"
        "from wardgate.masking import BASELINE_MASK, ColumnInfo, MaskingConfig, MaskingEngine\n"
        "from wardgate.masking import fastscan\n"
        "assert not fastscan.AVAILABLE\n"
        "columns, bodies = pickle.load(sys.stdin.buffer)\n"
        "m = MaskingEngine(MaskingConfig(), token_key=b'k').plan([BASELINE_MASK], columns)\n"
        "assert not m._scanner.compiled\n"
        "m._native = None  # pure Python (test_native_path.py: without the C extension)\n"
        "sys.stdout.buffer.write(b''.join(m.mask_data_row(b) for b in bodies))\n"
    )
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((columns, bodies)),
        capture_output=True,
        check=True,
        timeout=120,
    )
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    masker = engine.plan([BASELINE_MASK], columns)
    assert masker is not None and masker._scanner.compiled  # type: ignore[union-attr]
    masker._native = None
    expected = b"".join(masker.mask_data_row(b) for b in bodies)
    assert done.stdout == expected
    assert b"@" not in expected


def _finish_reference(found: list) -> list:
    """The de-overlap as first written: sort by (start, longest first), keep what fits."""
    if len(found) < 2:
        return found
    found = sorted(found, key=lambda f: (f[1], f[1] - f[2]))
    kept = [found[0]]
    last_end = found[0][2]
    for f in found[1:]:
        if f[1] >= last_end:
            kept.append(f)
            last_end = f[2]
    return kept


span_st = st.tuples(st.sampled_from("ABC"), st.integers(0, 12), st.integers(1, 6)).map(
    lambda t: (t[0], t[1], t[1] + t[2])
)


@settings(max_examples=500, deadline=None)
@given(st.lists(span_st, max_size=7))
def test_property_de_overlap_equals_reference(found: list) -> None:
    scanner = Scanner(ALL_RECS, compiled=False)
    assert scanner._finish(b"x", list(found)) == _finish_reference(list(found))
