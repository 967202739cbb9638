"""`wardgate policy check|test`: tools for policy authors.

Theory of operation: both commands load the configuration, build the same
`PolicyEngine` the gateway builds (`engine_from_config`) and run statements through a
`PolicySession` for the given identity and connection, with no database involved.

`policy check` prints each statement's verdict, rule and reason (`--json` for machines).
Exit status: 0 allow, 3 review, 4 deny (the most restrictive statement decides),
2 bad configuration, unknown identity or connection.

`policy test` runs a YAML table of cases (see docs/policies.md):

    defaults: {identity: ci-bot, connection: prod}
    cases:
      - {sql: "DROP TABLE t", expect: deny, rule: baseline/deny-drop-table}
      - {sql: "SELECT 1", expect: allow}

and prints a diff-like report of mismatches. Exit status: 0 all pass, 1 any mismatch,
2 bad configuration or case file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from wardgate.pipeline.command import SessionInfo
from wardgate.policy.engine import PolicyConfigError, PolicyEngine

__all__ = ["register", "engine_from_config", "EXIT_CODES"]

EXIT_CODES = {"allow": 0, "review": 3, "deny": 4}
_RANK = {"allow": 0, "review": 1, "deny": 2}

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The wardgate YAML configuration file.")
]
err = Console(stderr=True, highlight=False)


def _out(line: str) -> None:
    typer.echo(line)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"wardgate: {message}", markup=False)
    return typer.Exit(code)


def _load_config(path: Path) -> Any:
    """The lead's config loader; a bad file is exit status 2."""
    from wardgate.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise _fail(f"configuration error\n{exc}") from None


def engine_from_config(cfg: Any) -> PolicyEngine:
    """The PolicyEngine for a loaded Config (as the gateway builds it)."""
    return PolicyEngine(
        list(cfg.policies),
        connection_policies={c.name: list(c.policies) for c in cfg.connections},
        on_unparsed={c.name: c.on_unparsed for c in cfg.connections},
    )


def _session_info(cfg: Any, identity: str, connection: str) -> SessionInfo:
    ident = cfg.identity(identity) if hasattr(cfg, "identity") else None
    if ident is None:
        known = ", ".join(i.name for i in cfg.identities) or "none"
        raise _fail(f"unknown identity {identity!r} (known: {known})")
    conn = cfg.connection(connection) if hasattr(cfg, "connection") else None
    if conn is None:
        known = ", ".join(c.name for c in cfg.connections)
        raise _fail(f"unknown connection {connection!r} (known: {known})")
    return SessionInfo(
        session_id="policy-check",
        identity=ident.name,
        groups=tuple(ident.groups),
        connection=conn.name,
        protocol=getattr(conn, "protocol", "postgres"),
        client_addr="cli",
    )


def _build(config: Path) -> tuple[Any, PolicyEngine]:
    cfg = _load_config(config)
    try:
        return cfg, engine_from_config(cfg)
    except PolicyConfigError as exc:
        raise _fail(f"policy configuration error: {exc}") from None


def _run(session: Any, sql: str, via: str) -> list[dict[str, Any]]:
    out = []
    for command, decision in session.evaluate(sql, via=via):
        out.append(
            {
                "index": command.index,
                "statement": command.text,
                "verdict": decision.verdict.value,
                "rule": decision.rule,
                "reason": decision.reason,
                "review_ttl_seconds": decision.review_ttl_seconds,
                "approvals_required": decision.approvals_required,
                "masks": [
                    {
                        "rule": m.rule,
                        "entities": list(m.entities),
                        "columns": list(m.columns),
                        "strategy": m.strategy,
                    }
                    for m in decision.masks
                ],
                "facts": decision.facts,
            }
        )
    return out


def _overall(results: list[dict[str, Any]]) -> str:
    return max((r["verdict"] for r in results), key=_RANK.__getitem__, default="allow")


def check(
    sql: Annotated[str, typer.Argument(help="The SQL to check ('-' reads standard input).")],
    config: ConfigOpt,
    identity: Annotated[str, typer.Option("--identity", "-i", help="Identity name.")],
    connection: Annotated[str, typer.Option("--connection", "-n", help="Connection name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    via: Annotated[
        str, typer.Option(help="simple (Query) or parse (extended protocol).")
    ] = "simple",
) -> None:
    """Print the verdict, rule and reason for SQL. Exit 0 allow, 3 review, 4 deny."""
    cfg, engine = _build(config)
    session = engine.session(_session_info(cfg, identity, connection))
    text = sys.stdin.read() if sql == "-" else sql
    results = _run(session, text, via)
    verdict = _overall(results)
    if as_json:
        sys.stdout.write(json.dumps({"verdict": verdict, "statements": results}, indent=2) + "\n")
    else:
        for r in results:
            _out(f"{r['verdict'].upper():7} {r['rule']}")
            _out(f"  statement: {r['statement']}")
            _out(f"  why:       {r['reason']}")
            facts = r["facts"]
            if facts.get("kinds"):
                _out(f"  kinds:     {', '.join(facts['kinds'])}")
            if facts.get("features"):
                _out(f"  features:  {', '.join(facts['features'])}")
            if r["verdict"] == "review":
                ttl = r["review_ttl_seconds"]
                wait = f"{ttl:g}s" if ttl is not None else "approvals.default_ttl"
                _out(f"  review:    {r['approvals_required']} approval(s), waits up to {wait}")
            for m in r["masks"]:
                _out(f"  mask:      {m}")
        if not results:
            _out("ALLOW   (no statement)")
    raise typer.Exit(EXIT_CODES[verdict])


def _load_cases(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    if isinstance(doc, list):
        doc = {"cases": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise _fail(f"{path}: expected a list of cases or a mapping with 'cases'")
    defaults = doc.get("defaults") or {}
    cases = doc["cases"]
    for i, case in enumerate(cases, 1):
        if not isinstance(case, dict) or "sql" not in case or "expect" not in case:
            raise _fail(f"{path}: case {i} needs 'sql' and 'expect'")
        if case["expect"] not in _RANK:
            raise _fail(f"{path}: case {i}: expect must be allow, review or deny")
    return defaults, cases


def run_cases(
    cases_file: Annotated[Path, typer.Argument(help="YAML table of statements and verdicts.")],
    config: ConfigOpt,
    identity: Annotated[str | None, typer.Option(help="Default identity.")] = None,
    connection: Annotated[str | None, typer.Option(help="Default connection.")] = None,
) -> None:
    """Run a table of statements with expected verdicts. Exit 1 on any mismatch."""
    cfg, engine = _build(config)
    defaults, cases = _load_cases(cases_file)
    failures = 0
    for i, case in enumerate(cases, 1):
        ident = case.get("identity") or identity or defaults.get("identity")
        conn = case.get("connection") or connection or defaults.get("connection")
        if conn is None and len(cfg.connections) == 1:
            conn = cfg.connections[0].name
        if ident is None or conn is None:
            raise _fail(f"case {i}: no identity/connection (set them in 'defaults')")
        session = engine.session(_session_info(cfg, ident, conn))
        for stmt in case.get("setup", []):
            session.evaluate(stmt)
        results = _run(session, case["sql"], case.get("via", "simple"))
        got = _overall(results)
        rule = next((r["rule"] for r in results if r["verdict"] == got), "<default>")
        want_rule = case.get("rule")
        ok = got == case["expect"] and (want_rule is None or want_rule == rule)
        name = case.get("name") or case["sql"].replace("\n", " ")[:70]
        if ok:
            _out(f"ok    {i:3} {name}")
            continue
        failures += 1
        _out(f"FAIL  {i:3} {name}  [{ident} @ {conn}]")
        _out(f"  - expected {case['expect']:6} {want_rule or ''}")
        reason = next((r["reason"] for r in results if r["rule"] == rule), "")
        _out(f"  + got      {got:6} {rule}: {reason}")
    passed = len(cases) - failures
    _out(f"{passed} passed, {failures} failed")
    raise typer.Exit(1 if failures else 0)


def register(app: typer.Typer) -> None:
    policy_app = typer.Typer(
        help="Check and test SQL policies (no database needed).", no_args_is_help=True
    )
    policy_app.command("check")(check)
    policy_app.command("test")(run_cases)
    app.add_typer(policy_app, name="policy")
