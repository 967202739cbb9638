"""A column under a column mask rule must not reach the agent or the record by a path
other than its result column: the text of an error or notice the statement raises
(`invalid input syntax for type integer: "<value>"`), the planner's statistics
(`pg_stats.most_common_vals` after ANALYZE), another session's statement text
(`pg_stat_activity.query`), or a computed column when the rule names the schema
(`public.lk.diagnosis`); or a write that copies it into another column without a
SELECT (ON CONFLICT DO UPDATE, MERGE, UPDATE ... FROM, a generated column, ALTER COLUMN
... TYPE ... USING). Each test failed before the fix it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import start_gateway
from wardgate.testing.pgcluster import PgCluster

DIAGNOSIS = "okapi zebra fever"
SALARY = "987654.32"
LITERAL = "quagga lynx mumps"  # a value another agent writes into the covered column


@pytest.fixture(scope="module")
def gw(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    policy = {
        "name": "p",
        "include": ["baseline"],
        "rules": [
            {
                "name": "hide",
                "verdict": "mask",
                # one rule naming the schema, one not
                "mask": {"columns": ["public.lk.diagnosis", "lk.salary"], "strategy": "redact"},
            }
        ],
    }
    gateway = start_gateway(
        tmp_path_factory.mktemp("gw-side-channels"),
        pg_cluster,
        extra={"policies": [policy]},
        connection_extra={"policies": ["p"]},
    )
    pg_cluster.psql(
        "orders",
        "drop table if exists lk; create table lk (id int, diagnosis text, salary numeric, "
        "note text); alter table lk owner to app; "
        f"insert into lk select g, '{DIAGNOSIS}', {SALARY}, 'n' from generate_series(1, 50) g; "
        "create unique index on lk (id); drop table if exists lk_sink; "
        "create table lk_sink (id int primary key, note text); alter table lk_sink owner to app; "
        "insert into lk_sink values (1, 'n'); "
        # a function that exists in the target, not created through the gateway
        "create or replace function lk_echo(v text) returns int language plpgsql as "
        "$$ begin raise notice 'got %', v; return 1; end $$; "
        "grant execute on function lk_echo(text) to app",
    )
    try:
        yield gateway
    finally:
        gateway.proc.stop()


def _store(gw: Any) -> bytes:
    return b"".join(f.read_bytes() for f in Path(gw.directory).glob("audit.db*"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT salary::text::int FROM lk",
        "SELECT id FROM lk WHERE salary::text::int > 0",
        "SELECT ('{' || salary::text)::int[] FROM lk",
        "SELECT (salary::text || ' x')::json FROM lk",  # the value in CONTEXT, unquoted
        "SELECT current_setting(salary::text) FROM lk",
    ],
)
def test_an_error_quoting_a_covered_value_is_withheld(gw: Any, sql: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql)
    diag = info.value.diag
    said = " ".join(
        str(x)
        for x in (info.value, diag.message_detail, diag.message_hint, diag.context, diag.sqlstate)
    )
    assert SALARY not in said and "987654" not in said, said
    assert "message withheld" in said and "lk.salary" in said
    assert diag.sqlstate and diag.sqlstate != "42501"  # the server's SQLSTATE is kept
    assert SALARY.encode() not in _store(gw)


def test_an_error_of_a_statement_not_reading_a_covered_column_keeps_its_text(gw: Any) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match='"abc"'):
            conn.execute("SELECT note::int + 'abc'::int FROM lk")


def test_a_notice_raised_over_a_covered_value_is_withheld(gw: Any) -> None:
    notices: list[str] = []
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.message_primary} {d.context}"))
        conn.execute("SELECT lk_echo(salary::text) FROM lk WHERE id = 1")
    assert notices and all("message withheld" in n for n in notices), notices
    assert not any(SALARY in n for n in notices), notices


def test_a_schema_qualified_rule_covers_computed_columns_and_copies(gw: Any) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT diagnosis || '' AS d, upper(diagnosis) FROM lk LIMIT 1")
        assert DIAGNOSIS.upper() not in repr(row.fetchall())
        assert DIAGNOSIS not in repr(conn.execute("SELECT reverse(reverse(diagnosis)) FROM lk"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-copy"):
            conn.execute("UPDATE lk SET note = diagnosis WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-copy"):
            conn.execute("SELECT set_config('wg.x', diagnosis, false) FROM public.lk LIMIT 1")
    assert DIAGNOSIS.encode() not in _store(gw)


def test_planner_statistics_of_a_covered_column_are_masked(gw: Any) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute("ANALYZE lk")
        for sql in (
            "SELECT attname, most_common_vals, histogram_bounds FROM pg_stats "
            "WHERE tablename = 'lk'",
            "SELECT array_to_string(most_common_vals, ',') FROM pg_stats WHERE tablename = 'lk'",
            "SELECT s::text FROM pg_catalog.pg_stats s WHERE tablename = 'lk'",
        ):
            rows = repr(conn.execute(sql).fetchall())
            assert DIAGNOSIS not in rows and SALARY not in rows, (sql, rows)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-copy"):
            conn.execute("CREATE TEMP TABLE st AS SELECT * FROM pg_stats")


def test_another_sessions_statement_text_is_masked(gw: Any) -> None:
    """Every gateway session logs in as the same target user: pg_stat_activity shows
    each one's last statement, with the literals the record keeps out."""
    with psycopg.connect(gw.dsn(), autocommit=True) as writer:
        writer.execute(f"UPDATE lk SET diagnosis = '{LITERAL}' WHERE id = 50")
        with psycopg.connect(gw.dsn(), autocommit=True) as reader:
            rows = repr(reader.execute("SELECT query FROM pg_stat_activity").fetchall())
    assert LITERAL not in rows, rows
    assert LITERAL.encode() not in _store(gw)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO lk (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET note = lk.salary::text",
        "MERGE INTO lk_sink s USING lk ON s.id = lk.id WHEN MATCHED THEN UPDATE SET note = lk.salary",
        "MERGE INTO lk_sink s USING lk ON s.id = lk.id + 100 "
        "WHEN NOT MATCHED THEN INSERT VALUES (lk.id + 100, lk.salary)",
        "UPDATE lk_sink SET note = l.salary FROM lk l WHERE lk_sink.id = l.id",
        "ALTER TABLE lk ADD COLUMN s2 text GENERATED ALWAYS AS (salary::text) STORED",
        "ALTER TABLE lk ALTER COLUMN note TYPE text USING salary::text",
        # every later UPDATE of lk would copy the row's salary into lk_sink
        "CREATE RULE lk_copy AS ON UPDATE TO lk DO ALSO "
        "INSERT INTO lk_sink VALUES (NEW.id + 1000, NEW.salary)",
    ],
)
def test_writes_that_copy_a_covered_column_without_a_select_are_refused(gw: Any, sql: str) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked-column-copy"):
            conn.execute(sql)
        conn.execute("UPDATE lk SET note = 'n' WHERE id = 1")  # what a rule would fire on
    dump = gw.cluster.psql(
        "orders",
        "select note from lk_sink; select note from lk where id = 1; "
        "select column_name from information_schema.columns where table_name = 'lk'",
    )
    assert SALARY not in dump and "s2" not in dump, dump


def test_the_agents_application_name_and_reason_are_masked_in_the_record(gw: Any) -> None:
    """Both are the agent's own text, kept in every event of the session (and shown to
    reviewers): masked like statement text."""
    card, email = "4111111111111111", "nia.okoro@example.org"
    with psycopg.connect(gw.dsn(application_name=f"job-{card}"), autocommit=True) as conn:
        conn.execute(f"SET wardgate.reason = 'ticket from {email}'")
        conn.execute("SELECT 1")
    store = _store(gw)
    assert card.encode() not in store and email.encode() not in store


def test_rows_of_a_portal_the_agent_never_described_follow_column_rules(gw: Any) -> None:
    """Parse, Bind, Execute with no Describe: the gateway had no columns for the rows,
    so column rules did not apply (only the baseline entity scan) and the covered
    values reached the agent. The relay now describes the portal itself."""
    from tests.engines.postgres.test_robustness import _exchange, _login
    from wardgate.wire.pg import writers as w

    sock, _ = _login(gw.port)
    try:
        msgs = _exchange(
            sock,
            w.parse("", "SELECT diagnosis, salary::text || '' FROM lk WHERE id <= 3")
            + w.bind("", "", (), (), ())
            + w.execute("", 2)  # two rows, then PortalSuspended
            + w.execute("", 0)
            + w.sync(),
        )
    finally:
        sock.sendall(w.terminate())
        sock.close()
    rows = [bytes(m[1]) for m in msgs if m[0] == ord("D")]
    assert len(rows) == 3, msgs
    assert not any(DIAGNOSIS.encode() in r or SALARY.encode() in r for r in rows), rows
    # the gateway's own Describe is answered to the gateway only
    assert not any(m[0] in (ord("T"), ord("n")) for m in msgs), msgs
    assert DIAGNOSIS.encode() not in _store(gw)


def test_a_covered_column_named_with_unicode_escapes_keeps_its_values_out_of_the_record(
    gw: Any,
) -> None:
    """The record drops the constants and bound values of a statement that names a
    covered column; it found the names by their words, so `U&"s\\0061lary"` (salary)
    kept them. The parser's names now count too."""
    literal, bound = "555111.77", "555222.88"
    with psycopg.connect(gw.dsn(), autocommit=True) as conn:
        conn.execute(f'UPDATE lk SET U&"s\\0061lary" = {literal} WHERE id = 49')
        conn.execute('UPDATE lk SET U&"s\\0061lary" = %s WHERE id = 48', (bound,))
    store = _store(gw)
    assert literal.encode() not in store and bound.encode() not in store
