"""Masking benchmark: precision/recall per entity, and speed of the result masker.

Theory of operation: accuracy runs every recognizer (phone and IP included)
over the labelled Faker set from bench/pii_dataset.py; a positive is recalled
when findings of its entity cover its whole span, and a finding is a false
positive when it overlaps no labelled span of its entity. Speed feeds DataRow
bodies of a 10-column mixed-PII customer table through `ResultMasker.mask_data_row`
(the C row masker where it is built): the added time for a 1,000-row result (median
of repeats, fresh masker each time, against forwarding the same rows unmasked in the
same run) and the throughput over 1,000,000 rows on one core (cycling 20,000
distinct Faker rows through one masker: more than its value cache holds, so the
figure is for values that do not repeat). Other lines: a low-cardinality result
where the cache hits, the token strategy, and the Python paths that run without
the C row masker (with Hyperscan; pure Python) on the same rows. All in CPU time
of this process (time.process_time: other load on the machine does not count).
Prints Markdown tables for docs/benchmarks.md.

    python bench/bench_masking.py [--per-type 5000] [--rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_dataset import ENTITY_TYPES, MIXED_COLUMNS, Sample, generate, mixed_rows  # noqa: E402

from wardgate.masking import (  # noqa: E402
    BASELINE_MASK,
    ColumnInfo,
    MaskingConfig,
    MaskingEngine,
    fastscan,
)
from wardgate.masking.masker import decode_data_row, encode_data_row  # noqa: E402
from wardgate.masking.recognizers import BUILTIN_ENTITIES, builtin_recognizers  # noqa: E402
from wardgate.masking.scanner import Scanner  # noqa: E402
from wardgate.pipeline.command import MaskDirective  # noqa: E402

__all__ = ["evaluate", "accuracy_table", "speed"]


def _covered(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    pos = start
    for s, e in sorted(spans):
        if s <= pos < e:
            pos = e
        if pos >= end:
            return True
    return pos >= end


def evaluate(samples: list[Sample], scanner: Scanner | None = None) -> dict[str, dict[str, int]]:
    """Per entity: tp (findings on a labelled span), fp, positives, recalled, masked."""
    if scanner is None:
        scanner = Scanner([r for e in BUILTIN_ENTITIES for r in builtin_recognizers(e)])
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample in samples:
        data = sample.text.encode()
        labels = [
            (ent, len(sample.text[:s].encode()), len(sample.text[:e].encode()))
            for ent, s, e in sample.spans
        ]
        found = scanner.find(data)
        for f in found:
            hit = any(ent == f.entity and f.start < e and s < f.end for ent, s, e in labels)
            stats[f.entity]["tp" if hit else "fp"] += 1
        for ent, s, e in labels:
            st = stats[ent]
            st["positives"] += 1
            if _covered([(f.start, f.end) for f in found if f.entity == ent], s, e):
                st["recalled"] += 1
            if _covered([(f.start, f.end) for f in found], s, e):
                st["masked"] += 1
    return {k: dict(v) for k, v in stats.items()}


def metrics(stats: dict[str, dict[str, int]]) -> dict[str, tuple[float, float]]:
    out = {}
    for entity in ENTITY_TYPES:
        st = stats.get(entity, {})
        tp, fp = st.get("tp", 0), st.get("fp", 0)
        pos = st.get("positives", 0)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = st.get("recalled", 0) / pos if pos else 1.0
        out[entity] = (precision, recall)
    return out


def accuracy_table(per_type: int, seed: int = 4242) -> str:
    samples = generate(per_type, seed)
    stats = evaluate(samples)
    m = metrics(stats)
    negatives = sum(1 for s in samples if not s.spans)
    lines = [
        f"Accuracy: {per_type} positives per entity type, {negatives} look-alike negatives "
        f"(Faker seed {seed}).",
        "",
        "| entity | precision | recall | masked (any entity) | false positives |",
        "|---|---:|---:|---:|---:|",
    ]
    for entity in ENTITY_TYPES:
        st = stats.get(entity, {})
        p, r = m[entity]
        masked = st.get("masked", 0) / max(1, st.get("positives", 0))
        lines.append(f"| {entity} | {p:.4f} | {r:.4f} | {masked:.4f} | {st.get('fp', 0)} |")
    return "\n".join(lines)


def _bodies(n: int, seed: int = 7) -> list[bytes]:
    return [encode_data_row(row) for row in mixed_rows(n, seed)]


def _low_cardinality(bodies: list[bytes], n: int, distinct: int = 100) -> list[bytes]:
    """`n` rows whose values per column come from `distinct` rows (values repeat)."""
    rng = random.Random(11)
    rows = [decode_data_row(b) for b in bodies[:distinct]]
    ncols = len(rows[0])
    return [
        encode_data_row([rows[rng.randrange(distinct)][c] for c in range(ncols)]) for _ in range(n)
    ]


def speed(total_rows: int, repeats: int = 15, distinct_rows: int = 20_000) -> str:
    """The two targets, honestly: fresh maskers on distinct rows, the baseline in the same run."""
    columns = [ColumnInfo(name, "customers", oid, 0) for name, oid in MIXED_COLUMNS]
    engine = MaskingEngine(MaskingConfig(), token_key=b"bench-key")
    directives = [BASELINE_MASK]
    pool = _bodies(distinct_rows)  # distinct Faker rows; the throughput run cycles them
    bodies = pool[:1000]

    def run_mask(rows: list[bytes]) -> float:
        masker = engine.plan(directives, columns)  # a fresh masker: nothing cached
        assert masker is not None
        mask = masker.mask_data_row
        t = time.process_time()
        for body in rows:
            mask(body)
        return time.process_time() - t

    def run_decode(rows: list[bytes]) -> float:
        t = time.process_time()
        for body in rows:
            encode_data_row(decode_data_row(body))
        return time.process_time() - t

    def run_forward(rows: list[bytes]) -> float:
        t = time.process_time()
        out = []
        for body in rows:
            out.append(body)
        return time.process_time() - t

    run_mask(bodies)  # warm the engine's compiled patterns
    masked, forwarded, decoded = [], [], []
    for _ in range(repeats):  # interleaved, so machine load hits all three alike
        masked.append(run_mask(bodies))
        forwarded.append(run_forward(bodies))
        decoded.append(run_decode(bodies))
    masked_ms = statistics.median(masked) * 1e3
    forwarded_ms = statistics.median(forwarded) * 1e3
    decoded_ms = statistics.median(decoded) * 1e3
    added = masked_ms - forwarded_ms

    low = _low_cardinality(pool, 1000)
    low_ms = statistics.median(run_mask(low) for _ in range(repeats)) * 1e3

    # the same 1,000 rows as one run of whole messages (what the relay reads at once)
    run = b"".join(b"D" + (len(b) + 4).to_bytes(4, "big") + b for b in bodies)

    def run_batch() -> float:
        masker = engine.plan(directives, columns)
        assert masker is not None
        t = time.process_time()
        masker.mask_data_rows(run)
        return time.process_time() - t

    batch_ms = statistics.median(run_batch() for _ in range(repeats)) * 1e3

    masker = engine.plan(directives, columns)
    assert masker is not None
    mask = masker.mask_data_row
    done = 0
    t = time.process_time()
    while done < total_rows:
        chunk = pool[: total_rows - done]
        for body in chunk:
            mask(body)
        done += len(chunk)
    elapsed = time.process_time() - t
    rate = done / elapsed

    token_engine = MaskingEngine(MaskingConfig(), token_key=b"bench-key")
    token_dirs = [MaskDirective("bench/token", entities=("*",), strategy="token")]
    tmasker = token_engine.plan(token_dirs, columns)
    assert tmasker is not None
    t = time.process_time()
    for body in bodies:
        tmasker.mask_data_row(body)
    token_ms = (time.process_time() - t) * 1e3

    summary = masker.summary()
    found = sum(sum(c.values()) for c in summary["columns"].values())
    nulled = sum(summary["nulled"].values())

    # the same rows through the Python paths (the fallbacks without the C row masker):
    # the Hyperscan body path, and the pure-Python scanner with the value path
    pure_rows = pool[: min(len(pool), 20_000)]
    hs = engine.plan(directives, columns)
    assert hs is not None
    hs._native = None
    t = time.process_time()
    for body in pure_rows:
        hs.mask_data_row(body)
    hs_rate = len(pure_rows) / (time.process_time() - t)
    pure = engine.plan(directives, columns)
    assert pure is not None
    scanner = Scanner(pure._scanner.recognizers, compiled=False)  # type: ignore[union-attr]
    pure._scanner, pure._find, pure._body_path = scanner, scanner.spans, False
    pure._native = None
    t = time.process_time()
    for body in pure_rows:
        pure.mask_data_row(body)
    pure_rate = len(pure_rows) / (time.process_time() - t)
    in_c = masker._native_masker.stats()[0] if masker._native_masker is not None else 0  # type: ignore[attr-defined]
    if masker._native is not None:
        path = f"C row masker ({in_c / done:.1%} of rows; the rest: Python with Hyperscan)"
    elif masker._scanner is not None and masker._scanner.compiled:
        path = (
            f"Python, compiled pre-filter (hyperscan {fastscan.version()}); C extension not built"
        )
    else:
        path = "pure Python (neither the C extension nor hyperscan)"

    def verdict(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    return "\n".join(
        [
            "Speed: 10-column mixed-PII customer rows (id, name, email, phone, card, SSN, "
            "timestamp, amount, address, notes), text format, baseline directive, one core, "
            f"CPU time of this process, median of {repeats} runs.",
            "",
            "| measure | value | target |",
            "|---|---:|---|",
            f"| 1,000 distinct rows forwarded untouched (unmasked baseline) | {forwarded_ms:.2f} ms | |",
            f"| 1,000 distinct rows decoded + re-encoded, no masking | {decoded_ms:.2f} ms | |",
            f"| 1,000 distinct rows masked (fresh masker) | {masked_ms:.2f} ms | |",
            f"| **added by masking over unmasked** | **{added:.2f} ms** | < 20 ms: {verdict(added < 20)} |",
            f"| the same 1,000 rows as one run of messages (`mask_data_rows`) | {batch_ms:.2f} ms | |",
            f"| 1,000 rows, values from 100 distinct rows per column (cache hits) | {low_ms:.2f} ms | |",
            f"| 1,000 distinct rows, every entity, token strategy | {token_ms:.2f} ms | |",
            f"| {done:,} rows (cycling {len(pool):,} distinct rows) through one masker | {elapsed:.1f} s | |",
            f"| **throughput** | **{rate:,.0f} rows/s** | >= 100,000: {verdict(rate >= 100_000)} |",
            f"| path measured above | {path} | |",
            f"| without the C row masker: Python + Hyperscan, {len(pure_rows):,} distinct rows | {hs_rate:,.0f} rows/s | |",
            f"| pure-Python fallback, {len(pure_rows):,} distinct rows, value path | {pure_rate:,.0f} rows/s | |",
            f"| findings masked / values nulled in the throughput run | {found:,} / {nulled:,} | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-type", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=20_000, help="distinct rows generated")
    parser.add_argument("--quick", action="store_true", help="500 per type, 100,000 rows")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.per_type, args.rows, args.distinct = 500, 100_000, 5_000
    if not args.skip_accuracy:
        print(accuracy_table(args.per_type))
        print()
    print(speed(args.rows, distinct_rows=args.distinct))


if __name__ == "__main__":
    main()
