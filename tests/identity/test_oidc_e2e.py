"""OIDC identities end to end: a real key server, real PostgreSQL behind the real gateway,
real clients (psycopg over TLS, asyncpg over plaintext loopback), tokens signed by PyJWT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningGateway, agent_dsn, start_gateway
from tests.identity.oidc_provider import FakeOidcProvider, SigningKey, forged_token
from wardgate.testing.gateway_process import AGENT_TOKENS
from wardgate.testing.pgcluster import free_port, make_self_signed

OIDC_IDENTITIES: list[dict[str, Any]] = [
    {
        "name": "ci-deploy",
        "oidc": {
            "provider": "ci",
            "claims": {
                "sub": "repo:acme/api:ref:refs/heads/main",
                "repository_owner": "acme",
            },
            "groups_claim": "wardgate_groups",
        },
        "groups": ["ci"],
    },
    {
        "name": "ci-reports",
        "oidc": {"provider": "ci", "claims": {"repository": ["acme/reports", "acme/bi-*"]}},
    },
    {
        "name": "ci-old",
        "disabled": True,
        "oidc": {"provider": "ci", "claims": {"repository_owner": "acme"}},
    },
]


def _provider_cfg(issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "ci",
        "issuer": issuer,
        "audience": "wardgate",
        "algorithms": ["RS256", "ES256"],
        "leeway": "5s",
        "max_token_lifetime": "1h",
        "jwks_min_refetch": "1s",
        **extra,
    }


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeOidcProvider]:
    provider = FakeOidcProvider()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def oidc_gw(pg_cluster, idp: FakeOidcProvider, tmp_path_factory) -> Iterator[RunningGateway]:
    """TLS offered, not required; plaintext OIDC allowed from loopback (the test setting)."""
    tmp = tmp_path_factory.mktemp("oidc")
    cert, key = make_self_signed(tmp)
    gw = start_gateway(
        tmp / "gw",
        pg_cluster,
        connection_extra={
            "tls": {"cert": str(cert), "key": str(key)},
            "allow_oidc_without_tls_on_loopback": True,
            # a dozen refused tokens from 127.0.0.1 on purpose: past the default limit
            "auth_failure_limit": {"failures": 1000},
        },
        extra={"oidc_providers": [_provider_cfg(idp.issuer)]},
        extra_identities=OIDC_IDENTITIES,
    )
    try:
        yield gw
    finally:
        gw.proc.stop()


def _events(gw: RunningGateway, kind: str) -> list[Any]:
    from wardgate.audit.store import AuditStore

    store = AuditStore.open(str(gw.directory / "audit.db"))
    try:
        return list(store.events(kind=kind))
    finally:
        store.close()


async def _refused(gw: RunningGateway, user: str, token: str) -> Any:
    import asyncpg

    with pytest.raises(asyncpg.PostgresError) as info:
        await asyncpg.connect(
            host="127.0.0.1",
            port=gw.port,
            user=user,
            password=token,
            database="orders",
            ssl=False,
            timeout=10,
        )
    err = info.value
    assert err.severity == "FATAL"
    assert token not in str(err)
    return err


def test_good_token_over_tls_runs_and_is_recorded_with_its_claims(
    oidc_gw: RunningGateway, idp: FakeOidcProvider
) -> None:
    token = idp.token(jti="job-good-1")
    dsn = agent_dsn(oidc_gw.port, "ci-deploy", token=token, sslmode="require")
    with psycopg.connect(dsn, autocommit=True, application_name="deploy-job") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 40 + 2").fetchone() == (42,)
    starts = [
        e
        for e in _events(oidc_gw, "session_start")
        if e.identity == "ci-deploy" and e.meta.get("oidc", {}).get("jti") == "job-good-1"
    ]
    assert len(starts) == 1
    meta = starts[0].meta
    assert meta["auth"] == "oidc" and meta["tls"] is True
    oidc = meta["oidc"]
    assert oidc["provider"] == "ci"
    assert oidc["iss"] == idp.issuer
    assert oidc["sub"] == "repo:acme/api:ref:refs/heads/main"
    assert oidc["exp"].endswith("Z")
    assert oidc["groups"] == ["deployers", "acme-ci"]
    commands = [e for e in _events(oidc_gw, "command") if e.session == starts[0].session]
    assert commands and all(c.identity == "ci-deploy" for c in commands)
    # token identities keep working next to OIDC ones, and say how they logged in
    with psycopg.connect(oidc_gw.dsn("ci-bot"), autocommit=True) as conn:
        conn.execute("select 1")
    token_starts = [e for e in _events(oidc_gw, "session_start") if e.identity == "ci-bot"]
    assert token_starts[-1].meta["auth"] == "token" and "oidc" not in token_starts[-1].meta


async def test_es256_token_over_plaintext_loopback_with_the_setting(
    oidc_gw: RunningGateway, idp: FakeOidcProvider
) -> None:
    import asyncpg

    token = idp.token(
        "e1", sub="repo:acme/bi-daily:ref:refs/heads/main", repository="acme/bi-daily"
    )
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=oidc_gw.port,
        user="ci-reports",
        password=token,
        database="orders",
        ssl=False,
        timeout=10,
    )
    try:
        assert await conn.fetchval("select 7") == 7
    finally:
        await conn.close()


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    ("case", "user", "sqlstate", "message"),
    [
        ("expired", "ci-deploy", "28P01", "token expired 3m ago"),
        ("not yet valid", "ci-deploy", "28P01", "token is not valid yet"),
        ("wrong issuer", "ci-deploy", "28P01", "token issuer 'https://evil.example' is not"),
        ("wrong audience", "ci-deploy", "28P01", "token audience is not wardgate"),
        ("wrong signature", "ci-deploy", "28P01", "token signature does not verify"),
        ("too long lived", "ci-deploy", "28P01", "exceeds max_token_lifetime 1h"),
        ("claims", "ci-deploy", "28P01", "token claims do not match identity ci-deploy: sub"),
        ("A as B", "ci-reports", "28P01", "do not match identity ci-reports: repository"),
        ("alg none", "ci-deploy", "28P01", "token algorithm none is not allowed"),
        ("HS256 with the public key", "ci-deploy", "28P01", "token algorithm HS256 is not allowed"),
        ("not a jwt", "ci-deploy", "28P01", "the password is not an OIDC token"),
        ("disabled", "ci-old", "28000", 'identity "ci-old" is disabled'),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(
    oidc_gw: RunningGateway,
    idp: FakeOidcProvider,
    case: str,
    user: str,
    sqlstate: str,
    message: str,
) -> None:
    now = _now()
    k1 = idp.key("k1")
    tokens = {
        "expired": lambda: idp.token(iat=now - 600, nbf=now - 600, exp=now - 180),
        "not yet valid": lambda: idp.token(nbf=now + 600, exp=now + 900),
        "wrong issuer": lambda: idp.token(iss="https://evil.example"),
        "wrong audience": lambda: idp.token(aud="somebody-else"),
        "wrong signature": lambda: idp.token(key=_impostor(k1)),
        "too long lived": lambda: idp.token(exp=now + 6 * 3600),
        "claims": lambda: idp.token(sub="repo:acme/api:ref:refs/heads/feature"),
        "A as B": lambda: idp.token(),  # a token for ci-deploy presented as ci-reports
        "alg none": lambda: forged_token({"alg": "none", "kid": "k1"}, idp.claims(), None),
        # the key-confusion attack: HMAC with the provider's public key as the secret
        "HS256 with the public key": lambda: forged_token(
            {"alg": "HS256", "kid": "k1", "typ": "JWT"}, idp.claims(), k1.public_pem()
        ),
        "not a jwt": lambda: "hunter2-not-a-token",
        "disabled": lambda: idp.token(),
    }
    token = tokens[case]()
    err = await _refused(oidc_gw, user, token)
    assert err.sqlstate == sqlstate, str(err)
    assert message in str(err), str(err)
    failures = [e for e in _events(oidc_gw, "auth_failure") if e.identity == user]
    assert failures, "the refused attempt was not recorded"
    assert all(token not in str(f.meta) for f in failures)


def _impostor(real: SigningKey) -> SigningKey:
    """Another RSA key that claims the real key's kid."""
    fake = SigningKey(real.kid)
    return fake


async def test_unknown_kid_then_rotation_is_picked_up(
    oidc_gw: RunningGateway, idp: FakeOidcProvider
) -> None:
    import asyncpg

    rotated = SigningKey("k2")
    token = idp.token(key=rotated, jti="after-rotation")
    await asyncio.sleep(1.1)  # past jwks_min_refetch (1s in this config)
    err = await _refused(oidc_gw, "ci-deploy", token)
    assert err.sqlstate == "28P01"
    assert "token key id 'k2' is not among the keys of OIDC provider ci" in str(err)

    idp.keys.append(rotated)  # the provider rotates: k2 published next to k1
    try:
        await asyncio.sleep(1.1)
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=oidc_gw.port,
            user="ci-deploy",
            password=token,
            database="orders",
            ssl=False,
            timeout=10,
        )
        assert await conn.fetchval("select 1") == 1
        await conn.close()
        # an unknown kid again right away: refused without another fetch (rate limit)
        fetches = idp.requests.count("/jwks")
        await _refused(oidc_gw, "ci-deploy", idp.token(key=SigningKey("k3")))
        await _refused(oidc_gw, "ci-deploy", idp.token(key=SigningKey("k4")))
        assert idp.requests.count("/jwks") <= fetches + 1
    finally:
        idp.keys.remove(rotated)


def test_plaintext_refused_without_the_setting(
    pg_cluster, idp: FakeOidcProvider, tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path,
        pg_cluster,
        extra={"oidc_providers": [_provider_cfg(idp.issuer)]},
        extra_identities=OIDC_IDENTITIES,
    )
    try:
        token = idp.token()
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(agent_dsn(gw.port, "ci-deploy", token=token, sslmode="disable"))
        text = str(info.value)
        assert "sent only over TLS" in text and "sslmode=require" in text
        assert token not in text
        failures = [e for e in _events(gw, "auth_failure") if e.identity == "ci-deploy"]
        assert failures and failures[-1].meta["reason"] == "oidc: no TLS"
    finally:
        gw.proc.stop()
    assert token not in gw.proc.stderr


def test_key_server_down_at_start_fails_closed_token_identities_work(
    pg_cluster, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    idp = FakeOidcProvider()  # for signing only: its keys are not the ones configured
    idp.stop()
    gw = start_gateway(
        tmp_path,
        pg_cluster,
        connection_extra={"allow_oidc_without_tls_on_loopback": True},
        extra={"oidc_providers": [_provider_cfg(down)]},
        extra_identities=OIDC_IDENTITIES,
    )
    try:
        assert '"oidc_keys_unavailable"' in gw.proc.stderr
        with psycopg.connect(gw.dsn("ci-bot"), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        token = idp.token(iss=down)
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(agent_dsn(gw.port, "ci-deploy", token=token, sslmode="disable"))
        text = str(info.value)
        assert "cannot verify tokens of OIDC provider ci" in text
        assert "could not be fetched" in text
        assert token not in text
    finally:
        gw.proc.stop()
    assert token not in gw.proc.stderr


def test_no_token_in_logs_or_record(oidc_gw: RunningGateway, idp: FakeOidcProvider) -> None:
    good, bad = idp.token(jti="hygiene"), idp.token(aud="nope")
    with psycopg.connect(agent_dsn(oidc_gw.port, "ci-deploy", token=good, sslmode="require")) as c:
        c.execute("select 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(agent_dsn(oidc_gw.port, "ci-deploy", token=bad, sslmode="require"))
    time.sleep(0.3)
    blobs = {"stderr": oidc_gw.proc.stderr.encode()}
    for f in oidc_gw.directory.iterdir():
        if f.is_file() and f.suffix != ".yaml":
            blobs[f.name] = f.read_bytes()
    for name, blob in blobs.items():
        for token in (good, bad):
            assert token.encode() not in blob, f"a token appears in {name}"
            # nor its signature alone
            assert token.rsplit(".", 1)[1].encode() not in blob, f"a signature appears in {name}"
    assert AGENT_TOKENS["ci-bot"].encode() not in blobs["stderr"]


def test_psql_with_the_token_in_pgpassword(oidc_gw: RunningGateway, idp: FakeOidcProvider) -> None:
    """What the GitHub Actions example in docs/configuration.md does."""
    import os
    import shutil
    import subprocess

    token = idp.token(jti="psql-job")
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(oidc_gw.port),
        "PGUSER": "ci-deploy",
        "PGDATABASE": "orders",
        "PGSSLMODE": "require",
        "PGPASSWORD": token,
    }
    psql = shutil.which("psql")
    assert psql is not None
    r = subprocess.run(
        [psql, "-XAtc", "select current_user, 6 * 7"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "app|42"  # the target role: the agent never sees its credential
    r = subprocess.run(
        [psql, "-XAtc", "select 1"],
        env={**env, "PGPASSWORD": idp.token(aud="other")},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode != 0
    assert "FATAL" in r.stderr and "token audience is not wardgate" in r.stderr
