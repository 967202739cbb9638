"""Two identities with one token are refused at load: an agent could approve itself.

With `ci-approver` (a reviewer) configured with ci-bot's token, ci-bot's job held a
DELETE and approved it over the HTTP API with its own token (which resolved to the
reviewer): the self-approval rule never saw the same name twice. `serve` and
`config check` now refuse such a configuration, naming both identities and never the
token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wardgate.testing.gateway_process import AGENT_TOKENS, GatewayProcess, write_config
from wardgate.testing.pgcluster import PgCluster, free_port

SHARED = {"name": "ci-approver", "token": "env:WG_TOKEN_CI_BOT", "roles": ["reviewer"]}


def test_serve_refuses_two_identities_with_one_token(pg_cluster: PgCluster, tmp_path: Path) -> None:
    cfg, env = write_config(tmp_path, pg_cluster, api_port=free_port(), extra_identities=[SHARED])
    with pytest.raises(RuntimeError) as info:
        GatewayProcess(cfg, env).start()
    text = str(info.value)
    assert "identities[4] (ci-approver).token: the same token as identities[0] (ci-bot)" in text
    assert AGENT_TOKENS["ci-bot"] not in text

    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "config", "check", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the same token as identities[0] (ci-bot)" in " ".join(r.stderr.split())
    assert AGENT_TOKENS["ci-bot"] not in r.stdout + r.stderr


def test_registry_refuses_a_shared_token() -> None:
    from wardgate.config import IdentityConfig
    from wardgate.identity.registry import IdentityRegistry

    os.environ["WG_SHARED_T"] = "tok-shared-1234567890"
    idents = tuple(
        IdentityConfig.model_validate({"name": n, "token": "env:WG_SHARED_T"}) for n in ("a", "b")
    )
    with pytest.raises(ValueError, match="'a' and 'b' have the same token"):
        IdentityRegistry(idents)


def test_a_target_password_that_is_an_agent_token_is_refused(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    cfg, env = write_config(tmp_path, pg_cluster)
    env = {**env, "WG_TARGET_PASSWORD": AGENT_TOKENS["ci-bot"]}
    r = subprocess.run(
        [sys.executable, "-m", "wardgate", "config", "check", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "(orders).target.password: the same secret as identities[0] (ci-bot).token" in said
    assert AGENT_TOKENS["ci-bot"] not in r.stdout + r.stderr
