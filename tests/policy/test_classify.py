"""Classification from the parse tree: kinds, features, objects, properties."""

from __future__ import annotations

import pytest

from wardgate.policy.classify import ParseError, classify_message, classify_sql


def facts(sql: str):
    return classify_sql(sql)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("UPDATE t SET a = 1 WHERE id = 1", "update"),
        ("DELETE FROM t WHERE id = 1", "delete"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "merge"),
        ("COPY t TO STDOUT", "copy"),
        ("CALL p()", "call"),
        ("DO $$BEGIN END$$", "do"),
        ("SET x.y = 1", "set"),
        ("SHOW search_path", "show"),
        ("BEGIN", "transaction"),
        ("PREPARE p AS SELECT 1", "prepare"),
        ("EXECUTE p", "execute"),
        ("DEALLOCATE p", "deallocate"),
        ("EXPLAIN SELECT 1", "explain"),
        ("LISTEN c", "listen"),
        ("NOTIFY c", "notify"),
        ("DROP DATABASE d", "drop_database"),
        ("DROP SCHEMA s", "drop_schema"),
        ("DROP TABLE t", "drop_table"),
        ("DROP VIEW v", "drop_view"),
        ("DROP INDEX i", "drop_index"),
        ("DROP FUNCTION f()", "drop_function"),
        ("TRUNCATE t", "truncate"),
        ("ALTER TABLE t ADD COLUMN c int", "alter_table"),
        ("ALTER SYSTEM SET fsync = off", "alter_system"),
        ("CREATE ROLE r", "create_role"),
        ("ALTER ROLE r LOGIN", "alter_role"),
        ("GRANT SELECT ON t TO r", "grant"),
        ("REVOKE SELECT ON t FROM r", "revoke"),
        ("GRANT r TO u", "grant"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "create_function"),
        ("CREATE TABLE t2 (a int)", "create_table"),
        ("CREATE TABLE t3 AS SELECT 1", "create_table_as"),
        ("SELECT * INTO t4 FROM t", "create_table_as"),
        ("CREATE INDEX ON t (a)", "create_index"),
        ("VACUUM t", "vacuum"),
        ("LOAD 'x'", "load"),
    ],
)
def test_kinds(sql: str, kind: str) -> None:
    assert kind in facts(sql).kinds


def test_writes_and_reads() -> None:
    assert not facts("SELECT * FROM t").writes
    assert facts("SELECT * FROM t").reads
    assert facts("INSERT INTO t VALUES (1)").writes
    assert not facts("INSERT INTO t VALUES (1)").reads
    assert facts("INSERT INTO t VALUES (1) RETURNING id").reads
    assert facts("CREATE TABLE x (a int)").writes
    assert facts("COPY t FROM STDIN").writes
    assert not facts("COPY t TO STDOUT").writes
    assert facts("WITH d AS (DELETE FROM t RETURNING 1) SELECT 1").writes


@pytest.mark.parametrize(
    "where",
    [
        "",
        "WHERE true",
        "WHERE 1=1",
        "WHERE 'a'='a'",
        "WHERE NOT false",
        "WHERE id = 1 OR true",
        "WHERE 2 > 1 AND 'x' <> 'y'",
        "WHERE 't'",
        "WHERE 1::boolean",
        "WHERE NULL IS NULL",
        "WHERE $1",
        "WHERE random() < 2",
        "WHERE EXISTS (SELECT 1)",
        # tautologies over a column: every non-NULL row
        "WHERE id = id",
        "WHERE t.id = t.id",
        "WHERE id >= id",
        "WHERE id + 1 = id + 1",
        "WHERE id IS NOT DISTINCT FROM id",
        "WHERE name LIKE '%'",
        "WHERE name ILIKE '%%'",
        "WHERE name ~ '.*'",
        "WHERE id = 5 OR name = name",
        "WHERE t.id = id",  # one column of the target table, under two names
        "WHERE name IS NOT NULL",
    ],
)
def test_without_where_detected(where: str) -> None:
    f = facts(f"DELETE FROM t {where}")
    assert f.without_where
    assert facts(f"UPDATE t SET a = 1 {where}").without_where


@pytest.mark.parametrize(
    "where",
    [
        "WHERE id = 1",
        "WHERE false",
        "WHERE 1 = 2",
        "WHERE NULL",
        "WHERE id = 1 AND true",
        "WHERE id IN (SELECT id FROM s)",
        "WHERE id = $1",
        "WHERE CURRENT OF c",
        "WHERE a = b",
        "WHERE t.id = s.id",
        "WHERE id <> id",
        "WHERE name LIKE '%x'",
        "WHERE name ~ '^a'",
        "WHERE id > 0 AND id = id",
        "WHERE lower(name) = lower(name)",
        "WHERE name IS NULL",
    ],
)
def test_with_real_where(where: str) -> None:
    assert not facts(f"DELETE FROM t {where}").without_where


def test_constant_sensitivity() -> None:
    assert facts("DELETE FROM t WHERE 1=1").constant_sensitive
    assert facts("DELETE FROM t WHERE false").constant_sensitive
    assert not facts("DELETE FROM t WHERE id = 1").constant_sensitive
    assert not facts("SELECT * FROM t WHERE a = 'x'").constant_sensitive
    assert facts("SELECT set_config('application_name', 'x', false)").constant_sensitive
    assert facts("DO $$BEGIN END$$").constant_sensitive


def test_function_names_resolved_by_parser() -> None:
    assert "file_access" in facts("SELECT pg_catalog.pg_read_file('x')").features
    assert "file_access" in facts("SELECT \"pg_read_file\"('x')").features
    assert "file_access" in facts("SELECT PG_READ_FILE('x')").features
    assert "file_access" in facts("SELECT U&\"pg_read_\\0066ile\"('x')").features
    # a quoted upper-case name is a different (non-existent) function
    assert "file_access" not in facts("SELECT \"PG_READ_FILE\"('x')").features
    # a column with that name is not a call
    assert "file_access" not in facts("SELECT pg_read_file FROM notes").features
    assert "file_access" not in facts("SELECT 'pg_read_file(1)'").features


def test_objects_through_ctes_and_aliases() -> None:
    f = facts("WITH x AS (SELECT * FROM secrets) SELECT s.ssn FROM x s JOIN billing.inv i ON true")
    assert (None, "secrets") in f.tables
    assert ("billing", "inv") in f.tables
    assert (None, "x") not in f.tables  # a CTE, not a table
    assert "billing" in f.schemas
    # a non-recursive CTE body referring to its own name reads the real table
    f = facts("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets")
    assert (None, "secrets") in f.tables
    f = facts("SELECT c.email, name FROM customers c")
    assert ("customers", "email") in f.columns
    assert ("customers", "name") in f.columns
    assert ("customers", "*") in facts("SELECT c FROM customers c").columns
    assert ("customers", "*") in facts("SELECT * FROM customers").columns


def test_features() -> None:
    assert "copy_program" in facts("COPY t FROM PROGRAM 'id'").features
    assert "copy_server_file" in facts("COPY t TO '/tmp/x'").features
    assert not facts("COPY t TO STDOUT").features & {"copy_program", "copy_server_file"}
    assert "set_role" in facts("SET ROLE x").features
    assert "set_role" in facts("RESET ROLE").features
    assert "set_role" in facts("SET SESSION AUTHORIZATION x").features
    assert "set_role" in facts("SELECT set_config('Role', 'x', false)").features
    assert "set_role" not in facts("SET search_path = x").features
    assert "search_path" in facts("SET search_path = x").features
    assert "superuser_role" in facts("CREATE ROLE x SUPERUSER").features
    assert "superuser_role" not in facts("ALTER ROLE x NOSUPERUSER").features
    assert "bypassrls_role" in facts("ALTER USER x BYPASSRLS").features
    assert "drop_column" in facts("ALTER TABLE t DROP COLUMN c").features
    assert "cascade" in facts("DROP VIEW v CASCADE").features
    assert "dblink" in facts("SELECT dblink_exec('x', 'y')").features
    assert "foreign_server" in facts("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw").features
    assert "large_object_file" in facts("SELECT lo_export(1, '/tmp/x')").features
    assert "explain_analyze" in facts("EXPLAIN ANALYZE SELECT 1").features


def test_bodies() -> None:
    f = facts("DO $$BEGIN PERFORM pg_ls_dir('/'); END$$")
    assert "file_access" in f.features
    f = facts("DO $$BEGIN EXECUTE format('DROP TABLE %I', 'x'); END$$")
    assert "dynamic_sql" in f.features
    f = facts("DO $$BEGIN EXECUTE 'DROP TABLE x'; END$$")
    assert "drop_table" in f.kinds and "dynamic_sql" not in f.features
    f = facts("DO LANGUAGE plperlu $$ system('id') $$")
    assert "unanalysable_body" in f.features
    ((_, f),) = classify_message("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'")
    assert f.without_where and f.creates_function == "f"
    assert f.function_body is not None and "delete" in f.function_body.kinds
    f = facts("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'not sql at all'")
    assert "unanalysable_body" in f.features
    f = facts("CREATE FUNCTION f(t text) RETURNS text LANGUAGE internal AS 'pg_read_file_off_len'")
    assert "file_access" in f.features
    f = facts("SELECT query_to_xml('TRUNCATE t', true, false, '')")
    assert "truncate" in f.kinds


def test_message_split_by_parser() -> None:
    out = classify_message("SELECT ';' ; /* ; */ DROP TABLE t; SELECT 'é'")
    assert [text for text, _ in out] == ["SELECT ';'", "/* ; */ DROP TABLE t", "SELECT 'é'"] or [
        f.kind for _, f in out
    ] == ["select", "drop_table", "select"]
    assert [f.kind for _, f in out] == ["select", "drop_table", "select"]
    assert out[2][0].endswith("'é'")
    with pytest.raises(ParseError):
        classify_message("SELEC 1")


def test_fingerprint_recorded() -> None:
    ((_, f),) = classify_message("SELECT * FROM t WHERE a = 1")
    ((_, g),) = classify_message("SELECT * FROM t WHERE a = 2")
    assert f.fingerprint and f.fingerprint == g.fingerprint


def test_functions_named_by_signature_and_dml_targets() -> None:
    f = facts("CREATE OPERATOR === (PROCEDURE = pg_read_file, LEFTARG = text, RIGHTARG = bigint)")
    assert "file_access" in f.features
    f = facts("CREATE CAST (text AS int) WITH FUNCTION pg_catalog.pg_stat_file(text)")
    assert "file_access" in f.features
    assert ("pg_catalog", "pg_stat_file") in f.functions
    # a CTE cannot be a DML target: the real table is touched even when a CTE shadows it
    f = facts("WITH customers AS (SELECT 1) DELETE FROM customers WHERE id = 1")
    assert (None, "customers") in f.tables
    f = facts("UPDATE customers c SET ssn = NULL WHERE c.id = 1")
    assert ("customers", "ssn") in f.columns and ("customers", "id") in f.columns
    f = facts("INSERT INTO customers (name, ssn) VALUES ('a', 'b')")
    assert ("customers", "ssn") in f.columns
