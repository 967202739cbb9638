"""`wardgate masking report` on a real store filled with result events (real config file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wardgate.audit.store import AuditStore
from wardgate.cli import masking_commands
from wardgate.masking import BASELINE_MASK, ColumnInfo, MaskingConfig, MaskingEngine
from wardgate.masking.report import MaskingReport
from wardgate.pipeline.command import MaskDirective

CONFIG = """store: sqlite:///{db}
connections:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    target: {{host: 127.0.0.1, port: 5432, database: test, user: postgres}}
"""


def _summary() -> dict:
    engine = MaskingEngine(MaskingConfig(), token_key=b"k")
    cols = [
        ColumnInfo("email", "customers", 25),
        ColumnInfo("notes", "customers", 25),
        ColumnInfo("ssn", "customers", 25),
        ColumnInfo("amount", "customers", 1700),
    ]
    rule = MaskDirective("pii/ssn", columns=("customers.ssn",), strategy="token")
    masker = engine.plan([BASELINE_MASK, rule], cols)
    masker.mask_values([b"a@b.com", b"card 4111 1111 1111 1111", b"123456789", b"4111111111111111"])
    masker.mask_values([b"c@d.org", b"nothing here", b"987654321", b"12.50"])
    masker.mask_values([b"nobody", None, None, None])
    return masker.summary()


@pytest.fixture
def cli(tmp_path: Path):
    db = tmp_path / "audit.db"
    store = AuditStore.open(f"sqlite:///{db}")
    summary = _summary()
    store.append_sync("command", identity="ci", connection="orders", verdict="allow")
    store.append_sync("result", identity="ci", connection="orders", meta={"masking": summary})
    store.append_sync("result", identity="etl", connection="orders", meta={"masking": summary})
    store.append_sync("result", identity="ci", connection="orders", meta={"rows": 5})
    store.append_sync("result", identity="ci", connection="billing", meta={"masking": summary})
    store.close()
    cfg = tmp_path / "wardgate.yaml"
    cfg.write_text(CONFIG.format(db=db))
    app = typer.Typer()
    masking_commands.register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(
        app, ["masking", "report", "--config", str(cfg), *args], env={"COLUMNS": "200"}
    )


def test_json_report_per_connection_and_column(cli) -> None:
    r = cli("--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    orders = doc["connections"]["orders"]
    assert (orders["results"], orders["results_masked"], orders["results_unmasked"]) == (3, 2, 1)
    assert orders["rows_scanned"] == 6
    assert orders["rules"] == ["baseline/mask-pii", "pii/ssn"]
    cols = orders["columns"]
    assert cols["email"]["entities"] == {"EMAIL_ADDRESS": 4}
    assert cols["notes"]["entities"] == {"CREDIT_CARD": 2}
    assert cols["ssn"]["column_rules"] == [{"rule": "pii/ssn", "strategy": "token", "values": 4}]
    assert cols["ssn"]["masked_values"] == 4
    assert cols["amount"]["nulled"] == 2 and cols["amount"]["entities"] == {"CREDIT_CARD": 2}
    assert cols["email"]["rows_scanned"] == 6 and cols["email"]["results"] == 2
    assert doc["connections"]["billing"]["results"] == 1


def test_filters(cli) -> None:
    doc = json.loads(cli("--json", "--identity", "etl").output)
    assert list(doc["connections"]) == ["orders"]
    assert doc["connections"]["orders"]["columns"]["email"]["entities"] == {"EMAIL_ADDRESS": 2}
    doc = json.loads(cli("--json", "--connection", "billing").output)
    assert list(doc["connections"]) == ["billing"]
    doc = json.loads(cli("--json", "--since", "2999-01-01").output)
    assert doc["connections"] == {}
    doc = json.loads(cli("--json", "--until", "2000-01-01").output)
    assert doc["connections"] == {}


def test_table_output(cli) -> None:
    r = cli()
    assert r.exit_code == 0, r.output
    assert "connection orders: 3 results (2 masked, 1 without a masker)" in r.output
    assert "EMAIL_ADDRESS 4" in r.output and "pii/ssn (token) 4" in r.output
    assert "No result events" in cli("--identity", "nobody").output


def test_missing_store_and_bad_config(tmp_path: Path) -> None:
    app = typer.Typer()
    masking_commands.register(app)
    runner = CliRunner()
    cfg = tmp_path / "w.yaml"
    cfg.write_text(CONFIG.format(db=tmp_path / "none" / "audit.db"))
    r = runner.invoke(app, ["masking", "report", "--config", str(cfg)])
    assert r.exit_code == 1 and "not found" in r.output
    cfg.write_text("store: [\n")
    r = runner.invoke(app, ["masking", "report", "--config", str(cfg)])
    assert r.exit_code == 2


def test_report_tolerates_malformed_summaries() -> None:
    report = MaskingReport()
    report.add("c", {"rows": "x", "columns": {"a": {"EMAIL_ADDRESS": 1}}, "nulled": []})
    report.add("c", "garbage")
    report.add(None, None)
    doc = report.as_dict()
    assert doc["malformed_summaries"] == 1
    assert doc["connections"]["c"]["columns"]["a"]["entities"] == {"EMAIL_ADDRESS": 1}
    assert doc["connections"]["(none)"]["results_unmasked"] == 1


def test_column_names_are_shown_not_obeyed(tmp_path: Path) -> None:
    """A column name is the agent's alias: markup in it crashed the table (MarkupError),
    a control sequence reached the terminal."""
    db = tmp_path / "audit.db"
    store = AuditStore.open(f"sqlite:///{db}")
    alias = "[/x]\x1b[2Jmail"
    store.append_sync("result", identity="ci", connection="orders",
                      meta={"masking": {"columns": {alias: {"EMAIL_ADDRESS": 2}},
                                        "rows": 2}})  # fmt: skip
    store.close()
    cfg = tmp_path / "wardgate.yaml"
    cfg.write_text(CONFIG.format(db=db))
    app = typer.Typer()
    masking_commands.register(app)
    r = CliRunner().invoke(app, ["masking", "report", "--config", str(cfg)],
                           env={"COLUMNS": "200"})  # fmt: skip
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 0, r.output
    assert "[/x]\\x1b[2Jmail" in r.output and "\x1b[2J" not in r.output
