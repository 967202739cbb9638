"""Fixtures shared by the end-to-end tests: a real PostgreSQL cluster and real gateways."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from wardgate.testing.gateway_process import AGENT_TOKENS, GatewayProcess, write_config
from wardgate.testing.pgcluster import PgCluster, find_pg_bin


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    if shutil.which("psql") is None:
        pytest.skip("psql not found: apt-get install postgresql-client")
    cluster = PgCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


def agent_dsn(
    port: int | str,
    identity: str = "ci-bot",
    *,
    token: str | None = None,
    dbname: str = "orders",
    **extra: str,
) -> str:
    token = AGENT_TOKENS[identity] if token is None else token
    parts = [f"host=127.0.0.1 port={port} user={identity} password={token} dbname={dbname}"]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


class RunningGateway:
    def __init__(self, proc: GatewayProcess, directory: Path, cluster: PgCluster) -> None:
        self.proc = proc
        self.directory = directory
        self.cluster = cluster

    @property
    def port(self) -> int:
        return int(self.proc.ready["listeners"]["orders"].rsplit(":", 1)[1])

    @property
    def config(self) -> Path:
        return self.proc.config

    @property
    def env(self) -> dict[str, str]:
        return self.proc.env

    def dsn(self, identity: str = "ci-bot", **kw: str) -> str:
        return agent_dsn(self.port, identity, **kw)


def start_gateway(tmp: Path, cluster: PgCluster, **kw) -> RunningGateway:
    cfg, env = write_config(tmp, cluster, **kw)
    proc = GatewayProcess(cfg, env).start()
    return RunningGateway(proc, tmp, cluster)


@pytest.fixture(scope="module")
def gateway(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), pg_cluster)
    try:
        yield gw
    finally:
        gw.proc.stop()
