"""metrics.py: snapshots of a registry, their sum over workers, the rendered page."""

from __future__ import annotations

import json

from wardgate.metrics import Metrics, merge_snapshots, render_prometheus


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_one_process_page_is_rendered_as_before() -> None:
    m = Metrics()
    m.statements[("shop", "allow")] += 3
    m.active[("shop",)] += 2
    m.audit_failures[()] += 1
    m.gauge_source("wardgate_audit_events", "Events.", (), lambda: [((), 7)])
    text = render_prometheus(m)
    assert _lines(text) == [
        'wardgate_sessions_active{connection="shop"} 2',
        'wardgate_statements_total{connection="shop",verdict="allow"} 3',
        "wardgate_audit_append_failures_total 1",
        "wardgate_audit_events 7",
    ]
    assert "# TYPE wardgate_statements_total counter" in text
    assert "worker" not in text
    # rendering the registry's own snapshot as "merged" gives the same page
    assert render_prometheus(m, merged=merge_snapshots([m.snapshot()])) == text


def test_counters_and_gauges_are_summed_by_label_set() -> None:
    a, b = Metrics(), Metrics()
    a.statements[("shop", "allow")] += 3
    b.statements[("shop", "allow")] += 4
    b.statements[("shop", "deny")] += 1
    a.refusals[("shop", "deny", "r1")] += 2
    b.refusals[("hr", "deny", "r1")] += 5
    a.active[("shop",)] += 2
    b.active[("shop",)] += 1
    a.sessions_refused[("bad token",)] += 1
    # snapshots travel as JSON between processes
    snaps = [json.loads(json.dumps(s.snapshot())) for s in (a, b)]
    page = _lines(render_prometheus(a, merged=merge_snapshots(snaps)))
    assert 'wardgate_statements_total{connection="shop",verdict="allow"} 7' in page
    assert 'wardgate_statements_total{connection="shop",verdict="deny"} 1' in page
    assert 'wardgate_statements_refused_total{connection="shop",verdict="deny",rule="r1"} 2' in page
    assert 'wardgate_statements_refused_total{connection="hr",verdict="deny",rule="r1"} 5' in page
    assert 'wardgate_sessions_active{connection="shop"} 3' in page
    assert 'wardgate_sessions_refused_total{reason="bad token"} 1' in page


def test_gauge_sources_are_read_once_by_the_rendering_process() -> None:
    a, b = Metrics(), Metrics()
    calls = []
    a.gauge_source("wardgate_approvals_pending", "Held.", (), lambda: calls.append(1) or [((), 2)])
    b.gauge_source("wardgate_approvals_pending", "Held.", (), lambda: [((), 2)])
    assert "wardgate_approvals_pending" not in a.snapshot()  # not summed over workers
    page = _lines(render_prometheus(a, merged=merge_snapshots([a.snapshot(), b.snapshot()])))
    assert page == ["wardgate_approvals_pending 2"] and calls == [1]


def test_histograms_merge_bucket_by_bucket() -> None:
    a, b = Metrics(), Metrics()
    ha = a.histogram("wardgate_hold_seconds", "Hold time.", ("connection",), (1, 10))
    hb = b.histogram("wardgate_hold_seconds", "Hold time.", ("connection",), (1, 10))
    ha.observe(("shop",), 0.5)
    ha.observe(("shop",), 5)
    hb.observe(("shop",), 1)  # on the bound: counted in le="1"
    hb.observe(("shop",), 30)
    hb.observe(("hr",), 2)
    snaps = [json.loads(json.dumps(s.snapshot())) for s in (a, b)]
    text = render_prometheus(a, merged=merge_snapshots(snaps))
    assert "# TYPE wardgate_hold_seconds histogram" in text
    page = _lines(text)
    for line in (
        'wardgate_hold_seconds_bucket{connection="shop",le="1"} 2',
        'wardgate_hold_seconds_bucket{connection="shop",le="10"} 3',
        'wardgate_hold_seconds_bucket{connection="shop",le="+Inf"} 4',
        'wardgate_hold_seconds_sum{connection="shop"} 36.5',
        'wardgate_hold_seconds_count{connection="shop"} 4',
        'wardgate_hold_seconds_bucket{connection="hr",le="1"} 0',
        'wardgate_hold_seconds_bucket{connection="hr",le="+Inf"} 1',
        'wardgate_hold_seconds_count{connection="hr"} 1',
    ):
        assert line in page, line
    # one process alone renders the same way
    single = _lines(render_prometheus(b))
    assert 'wardgate_hold_seconds_bucket{connection="shop",le="10"} 1' in single
    assert 'wardgate_hold_seconds_count{connection="shop"} 2' in single


def test_histograms_with_other_buckets_are_not_added() -> None:
    a, b = Metrics(), Metrics()
    a.histogram("wardgate_h", "h", (), (1,)).observe((), 0.5)
    b.histogram("wardgate_h", "h", (), (2,)).observe((), 0.5)
    merged = merge_snapshots([a.snapshot(), b.snapshot()])
    assert merged["wardgate_h"]["values"] == [[[], [1, 0, 0.5]]]


def test_a_family_only_a_worker_knows_is_rendered_with_its_own_help() -> None:
    a, b = Metrics(), Metrics()
    b.histogram("wardgate_new_seconds", "New.", (), (1,)).observe((), 3)
    b._counter("wardgate_new_total", "New things.", ("kind",))[("x",)] += 2
    text = render_prometheus(a, merged=merge_snapshots([a.snapshot(), b.snapshot()]))
    assert "# HELP wardgate_new_total New things." in text
    assert 'wardgate_new_total{kind="x"} 2' in text
    assert 'wardgate_new_seconds_bucket{le="+Inf"} 1' in text


def test_extra_families_follow_the_registry() -> None:
    m = Metrics()
    text = render_prometheus(
        m, extra=[("wardgate_worker_up", "Up.", "gauge", ("worker",), [(("0",), 1)])]
    )
    assert text.endswith('# TYPE wardgate_worker_up gauge\nwardgate_worker_up{worker="0"} 1\n')
