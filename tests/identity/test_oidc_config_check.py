"""`wardgate config check` reports OIDC providers and, with --connect, fetches their keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.identity.oidc_provider import FakeOidcProvider
from wardgate.testing.gateway_process import write_config
from wardgate.testing.pgcluster import PgCluster, free_port

IDENTITY = {"name": "ci-deploy", "oidc": {"provider": "ci", "claims": {"repository": "acme/*"}}}


def _check(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wardgate", "config", "check", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env, "COLUMNS": "250"},
    )  # fmt: skip


def test_providers_are_reported_and_their_keys_fetched(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    idp = FakeOidcProvider()
    try:
        cfg, env = write_config(
            tmp_path,
            pg_cluster,
            extra={
                "oidc_providers": [{"name": "ci", "issuer": idp.issuer, "audience": "wardgate"}]
            },
            extra_identities=[IDENTITY],
        )
        r = _check(cfg, env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "oidc providers" in r.stdout and f"ci ({idp.issuer}, keys: discovery" in r.stdout
        assert "1 OIDC-backed" in r.stdout
        assert "oidc ci" not in r.stdout  # nothing fetched without --connect
        assert not idp.requests
        r = _check(cfg, env, "--connect")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "oidc ci" in r.stdout and "2 key(s) from" in r.stdout and "e1, k1" in r.stdout
    finally:
        idp.stop()


def test_keys_that_cannot_be_fetched_fail_the_check(pg_cluster: PgCluster, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    cfg, env = write_config(
        tmp_path,
        pg_cluster,
        extra={"oidc_providers": [{"name": "ci", "issuer": down, "audience": "wardgate"}]},
        extra_identities=[IDENTITY],
    )
    r = _check(cfg, env, "--connect")
    assert r.returncode == 1, r.stdout
    assert "oidc ci" in r.stdout and "keys cannot be fetched" in r.stdout


def test_key_ids_from_a_key_set_are_shown_not_obeyed(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A key set's kids are the provider's text: rich markup in one crashed the check's
    table (MarkupError), a control sequence reached the operator's terminal raw."""
    import json

    from tests.identity.oidc_provider import SigningKey

    key = SigningKey("[/x]\x1b[2Jk1")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key.jwk]}))
    provider = {"name": "ci", "issuer": "https://idp.example", "audience": "wardgate",
                "jwks": f"file:{tmp_path / 'jwks.json'}"}  # fmt: skip
    cfg, env = write_config(
        tmp_path, pg_cluster, extra={"oidc_providers": [provider]}, extra_identities=[IDENTITY]
    )
    r = _check(cfg, env, "--connect")
    assert "Traceback" not in r.stderr and "MarkupError" not in r.stderr, r.stderr
    assert "[/x]\\x1b[2Jk1" in r.stdout and "\x1b[2J" not in r.stdout, r.stdout
