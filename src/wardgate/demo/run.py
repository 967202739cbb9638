"""`wardgate demo`: the whole product in two minutes, against a real PostgreSQL.

Starts a throw-away PostgreSQL (the machine's server binaries, else the `pgserver`
wheel), loads a small shop schema, starts `wardgate serve` as a real process, and runs a
scripted agent session with psycopg: a read whose emails and card numbers come back
masked, a DROP TABLE that is blocked, a DELETE that is held until a reviewer approves it
from the CLI, then `sessions`, `replay`, `verify` and an evidence bundle. Everything runs
in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

__all__ = ["run_demo"]

console = Console()

SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()

DEMO_POLICY = {
    "name": "shop",
    "include": ["baseline"],
    "rules": [
        {
            "name": "review-order-deletes",
            "verdict": "review",
            "reason": "deleting orders needs a second pair of eyes",
            "kinds": ["delete"],
            "objects": {"tables": ["orders"]},
            "review": {"ttl": "2m"},
        },
        {
            "name": "mask-ssn-column",
            "verdict": "mask",
            "reason": "an ssn column is masked whatever its content",
            "mask": {"columns": ["*.ssn"], "strategy": "redact"},
        },
    ],
}


def _step(n: int, title: str) -> None:
    console.print()
    console.rule(f"[bold cyan]{n}. {title}")


def _cli(
    cfg: Path, env: dict[str, str], *args: str, show: bool = True
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wardgate", *args, "--config", str(cfg)]
    if show:
        console.print(f"[dim]$ wardgate {' '.join(args)} --config {cfg.name}[/dim]")
    r = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env, "COLUMNS": "140"}
    )
    if show:
        if r.stdout.strip():
            console.print(r.stdout.rstrip(), highlight=False, markup=False)
        if r.stderr.strip():
            console.print(r.stderr.rstrip(), style="yellow", highlight=False, markup=False)
    return r


def _show_rows(title: str, cursor: Any) -> None:
    table = Table(title=title, title_justify="left")
    for col in cursor.description:
        table.add_column(col.name)
    for row in cursor.fetchall():
        table.add_row(*["NULL" if v is None else str(v) for v in row])
    console.print(table)


def _start_cluster():
    from wardgate.testing.pgcluster import PgCluster, find_pg_bin

    if find_pg_bin() is not None:
        cluster = PgCluster.create(database="shop")
        console.print(
            f"PostgreSQL {cluster.bin.parent.name} from this machine, port {cluster.port}"
        )
        return cluster
    raise RuntimeError(
        "no PostgreSQL server binaries found: install PostgreSQL (apt-get install postgresql) "
        "or the pgserver wheel (pip install pgserver)"
    )


def run_demo(*, keep: bool = False) -> int:
    import psycopg

    from wardgate.testing.gateway_process import AGENT_TOKENS, GatewayProcess, write_config

    console.print(
        Panel.fit(
            "[bold]wardgate[/bold]: an agent gets a database connection; wardgate records every\n"
            "statement, masks what must not leave, blocks what must not run, holds what needs\n"
            "a human, and keeps it all as evidence an auditor can verify offline.",
            border_style="cyan",
        )
    )
    work = Path(tempfile.mkdtemp(prefix="wardgate-demo-"))
    cluster = None
    gateway = None
    try:
        _step(1, "A real PostgreSQL with a small shop")
        cluster = _start_cluster()
        cluster.psql("shop", SCHEMA, user="postgres")
        cluster.psql("shop", "GRANT ALL ON ALL TABLES IN SCHEMA public TO app", user="postgres")
        console.print("Loaded customers (names, emails, card numbers, SSNs) and orders.")

        _step(2, "The gateway, configured in one YAML file")
        cfg, env = write_config(
            work,
            cluster,
            extra={"policies": [DEMO_POLICY]},
            connection_extra={"name": "shop", "policies": ["shop"]},
        )
        cfg_text = cfg.read_text()
        console.print(Syntax(cfg_text, "yaml", theme="ansi_dark", line_numbers=False))
        console.print(
            "[dim]Secrets are references (env:NAME): the agent's token and the database password "
            "never appear in the file, a log line or the record.[/dim]"
        )
        gateway = GatewayProcess(cfg, env).start()
        port = int(gateway.ready["listeners"]["shop"].rsplit(":", 1)[1])
        console.print(f"wardgate serve is listening on 127.0.0.1:{port}")
        dsn = (
            f"host=127.0.0.1 port={port} user=ci-bot password={AGENT_TOKENS['ci-bot']} "
            f"dbname=shop application_name=nightly-cleanup"
        )

        _step(3, "The agent connects as itself: identity ci-bot, its own token")
        console.print(
            f'[dim]$ psql "host=127.0.0.1 port={port} user=ci-bot '
            f'password=$CI_BOT_TOKEN dbname=shop"[/dim]'
        )
        conn = psycopg.connect(dsn, autocommit=True)
        conn.add_notice_handler(
            lambda d: console.print(f"[yellow]NOTICE[/yellow] {d.message_primary}")
        )
        console.print(
            f"connected; the server says current_user = "
            f"{conn.execute('select current_user').fetchone()[0]!r} (the gateway's credential)"
        )

        _step(4, "Recording and masking: a read of customer data")
        console.print(
            "[dim]> SELECT id, name, email, card_number, ssn FROM customers ORDER BY id[/dim]"
        )
        _show_rows(
            "what the agent received",
            conn.execute("SELECT id, name, email, card_number, ssn FROM customers ORDER BY id"),
        )
        console.print(
            "Emails and card numbers (last four kept) were found by content; the ssn column by a column rule.\nNone of them left the gateway, and the record holds the masked rows."
        )

        _step(5, "Blocking: a DROP TABLE")
        console.print("[dim]> DROP TABLE orders[/dim]")
        try:
            conn.execute("DROP TABLE orders")
        except psycopg.Error as exc:
            console.print(f"[red]ERROR {exc.sqlstate}[/red]  {exc.diag.message_primary}")
        console.print(
            f"orders still has {cluster.psql('shop', 'select count(*) from orders')} rows on the target."
        )

        _step(6, "Just-in-time approval: a DELETE held for a human")
        conn.execute("SET wardgate.reason = 'nightly cleanup of cancelled orders, ticket OPS-1432'")
        console.print(
            "[dim]> SET wardgate.reason = 'nightly cleanup of cancelled orders, ticket OPS-1432'[/dim]"
        )
        console.print("[dim]> DELETE FROM orders WHERE status = 'cancelled'[/dim]")
        result: dict[str, Any] = {}

        def agent() -> None:
            try:
                cur = conn.execute("DELETE FROM orders WHERE status = 'cancelled'")
                result["status"] = cur.statusmessage
            except psycopg.Error as exc:  # pragma: no cover - shown in the demo
                result["error"] = str(exc)

        t = threading.Thread(target=agent)
        t.start()
        pending: list[dict] = []
        for _ in range(100):
            r = _cli(cfg, env, "approvals", "list", "--json", show=False)
            pending = [json.loads(x) for x in r.stdout.splitlines() if x.strip().startswith("{")]
            if not pending and r.stdout.strip().startswith("["):
                pending = json.loads(r.stdout)
            if pending:
                break
            time.sleep(0.2)
        console.print("A reviewer sees the request, with the agent's reason:")
        _cli(cfg, env, "approvals", "list")
        if pending:
            _cli(
                cfg,
                env,
                "approvals",
                "approve",
                pending[0]["id"],
                "--as",
                "alice",
                "--reason",
                "checked the ticket",
            )
        t.join(timeout=60)
        if "status" in result:
            console.print(f"[green]the held DELETE ran after approval:[/green] {result['status']}")
        else:
            console.print(f"[red]the DELETE did not run: {result.get('error')}[/red]")
        conn.close()

        _step(7, "The record: sessions and a replay")
        r = _cli(cfg, env, "sessions", "--json", show=False)
        sessions = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        _cli(cfg, env, "sessions")
        if sessions:
            _cli(cfg, env, "replay", sessions[-1]["id"])

        gateway.stop()
        gateway = None

        _step(8, "Evidence: verify the tamper-evident log")
        r = _cli(cfg, env, "verify", "--published", str(work / "published-checkpoints.txt"))
        ok = r.returncode == 0
        bundle = work / "evidence.zip"
        vkeys = work / "wardgate.vkey"
        console.print("An auditor pins the gateway's public key, then checks a bundle offline:")
        r_keys = _cli(cfg, env, "keys", "show")
        vkeys.write_text(r_keys.stdout)
        _cli(cfg, env, "evidence", "export", "--identity", "ci-bot", "-o", str(bundle))
        console.print(f"[dim]$ wardgate evidence verify {bundle.name} --key {vkeys.name}[/dim]")
        r2 = subprocess.run(
            [
                sys.executable,
                "-m",
                "wardgate",
                "evidence",
                "verify",
                str(bundle),
                "--key",
                str(vkeys),
            ],
            capture_output=True,
            text=True,
        )
        console.print(r2.stdout.rstrip(), highlight=False, markup=False)
        ok = ok and r2.returncode == 0
        with zipfile.ZipFile(bundle) as zf:
            console.print(f"[dim]bundle members: {', '.join(zf.namelist())}[/dim]")
        console.print(
            Panel.fit(
                "[green]demo complete[/green]: recorded, masked, blocked, approved, verified,\n"
                "evidence exported and checked offline"
                if ok and "status" in result
                else "[red]demo finished with problems (see above)[/red]",
                border_style="green" if ok else "red",
            )
        )
        return 0 if ok and "status" in result else 1
    finally:
        if gateway is not None:
            gateway.stop()
        if cluster is not None:
            cluster.destroy()
        if keep:
            console.print(f"[dim]kept {work}[/dim]")
        else:
            shutil.rmtree(work, ignore_errors=True)
