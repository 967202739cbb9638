"""The token verifier in process: keys from a file (air-gapped set-ups), algorithms and
key types, claim rules, and the refresh of a changed key set."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from tests.identity.oidc_provider import FakeOidcProvider, SigningKey, forged_token
from wardgate.config import OidcBinding, OidcProviderConfig
from wardgate.identity.oidc import OidcError, OidcVerifier, describe_age
from wardgate.testing.pgcluster import free_port

ISSUER = "https://idp.example.com"


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": ISSUER, "aud": "wardgate", "sub": "repo:acme/api:ref:refs/heads/main",
         "iat": now, "exp": now + 300, "groups": ["dba", "ci"]}  # fmt: skip
    c.update(over)
    return c


def _setup(tmp_path: Path, keys: list[dict[str, Any]], **cfg: Any) -> OidcVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    provider = OidcProviderConfig(
        name="p",
        issuer=ISSUER,
        audience=("wardgate",),
        jwks=f"file:{path}",
        **{"algorithms": ("RS256", "PS256", "ES256", "EdDSA"), "jwks_min_refetch": 0, **cfg},
    )
    return OidcVerifier([provider])


def _binding(**claims: Any) -> OidcBinding:
    return OidcBinding.model_validate(
        {"provider": "p", "claims": claims or {"sub": "repo:acme/*"}, "groups_claim": "groups"}
    )


async def _verify(v: OidcVerifier, token: str, binding: OidcBinding | None = None):
    return await v.verify("ident", binding or _binding(), token)


async def test_file_keys_rsa_pss_ec_and_eddsa(tmp_path: Path) -> None:
    rsa, ec = SigningKey("r"), SigningKey("e", "EC")
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_jwk = json.loads(OKPAlgorithm.to_jwk(ed.public_key())) | {"kid": "ed"}
    rsa_no_alg = dict(rsa.jwk)
    rsa_no_alg.pop("alg")
    v = _setup(tmp_path, [rsa_no_alg, ec.jwk, ed_jwk])
    await v.start()
    try:
        for key, alg, kid in ((rsa.private, "RS256", "r"), (rsa.private, "PS256", "r"),
                              (ec.private, "ES256", "e"), (ed, "EdDSA", "ed")):  # fmt: skip
            token = jwt.encode(_claims(jti=alg), key, algorithm=alg, headers={"kid": kid})
            got = await _verify(v, token)
            assert got.jti == alg and got.sub.startswith("repo:acme/")
            assert got.extra_groups == ("dba", "ci")
    finally:
        await v.aclose()


async def test_the_key_type_and_published_alg_bind_the_algorithm(tmp_path: Path) -> None:
    rsa, ec = SigningKey("r"), SigningKey("e", "EC")  # rsa.jwk says alg RS256
    v = _setup(tmp_path, [rsa.jwk, ec.jwk])
    await v.start()
    pss = jwt.encode(_claims(), rsa.private, algorithm="PS256", headers={"kid": "r"})
    with pytest.raises(OidcError, match="does not match the algorithm of key r"):
        await _verify(v, pss)
    # an RS256 token naming the EC key: the EC key cannot verify RS256
    wrong = jwt.encode(_claims(), rsa.private, algorithm="RS256", headers={"kid": "e"})
    with pytest.raises(OidcError) as info:
        await _verify(v, wrong)
    assert "e" in str(info.value) and info.value.sqlstate == "28P01"


async def test_algorithm_attacks(tmp_path: Path) -> None:
    rsa = SigningKey("r")
    v = _setup(tmp_path, [rsa.jwk])
    await v.start()
    for header, key in (
        ({"alg": "none", "kid": "r"}, None),
        ({"alg": "HS256", "kid": "r"}, rsa.public_pem()),
        ({"alg": "HS256", "kid": "r"}, json.dumps(rsa.jwk).encode()),
        ({"kid": "r"}, None),
    ):
        with pytest.raises(OidcError, match="is not allowed"):
            await _verify(v, forged_token(header, _claims(), key))


async def test_a_token_without_kid_needs_a_single_key(tmp_path: Path) -> None:
    a, b = SigningKey("a"), SigningKey("b")
    one = _setup(tmp_path, [a.jwk])
    await one.start()
    token = jwt.encode(_claims(), a.private, algorithm="RS256")
    assert (await _verify(one, token)).iss == ISSUER
    two = _setup(tmp_path, [a.jwk, b.jwk])
    await two.start()
    with pytest.raises(OidcError, match="token key id none is not among"):
        await _verify(two, token)


async def test_private_and_symmetric_keys_in_the_set_are_ignored(tmp_path: Path) -> None:
    a = SigningKey("a")
    oct_key = {"kty": "oct", "kid": "s", "k": "c2VjcmV0"}
    v = _setup(tmp_path, [a.jwk, oct_key])
    await v.start()
    assert set(v.providers["p"].keys) == {"a"}
    with pytest.raises(OidcError, match="is not allowed"):
        await _verify(v, forged_token({"alg": "HS256", "kid": "s"}, _claims(), b"secret"))


@pytest.mark.parametrize(
    ("claims", "token_claims", "ok"),
    [
        ({"sub": "repo:acme/*"}, {}, True),
        ({"sub": "repo:Acme/*"}, {}, False),  # case-sensitive
        ({"sub": ["repo:other/*", "repo:acme/api:*"]}, {}, True),  # any of a list
        ({"groups": "dba"}, {}, True),  # a list claim: any element
        ({"groups": "admin"}, {}, False),
        ({"run_attempt": 1}, {"run_attempt": 1}, True),  # numbers compare as text
        ({"ref_protected": True}, {"ref_protected": True}, True),
        ({"ref_protected": True}, {"ref_protected": "yes"}, False),
        ({"environment": "prod"}, {}, False),  # missing claim
        ({"environment": "*"}, {"environment": {"name": "prod"}}, False),  # an object
    ],
)
async def test_claim_rules(tmp_path: Path, claims, token_claims, ok) -> None:
    a = SigningKey("a")
    v = _setup(tmp_path, [a.jwk])
    await v.start()
    token = jwt.encode(_claims(**token_claims), a.private, algorithm="RS256", headers={"kid": "a"})
    if ok:
        await _verify(v, token, _binding(**claims))
    else:
        with pytest.raises(OidcError, match="token claims do not match identity ident: "):
            await _verify(v, token, _binding(**claims))


async def test_a_changed_key_file_is_read_again_for_an_unknown_kid(tmp_path: Path) -> None:
    a, b = SigningKey("a"), SigningKey("b")
    v = _setup(tmp_path, [a.jwk], jwks_min_refetch=3600)
    await v.start()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [a.jwk, b.jwk]}))
    token = jwt.encode(_claims(), b.private, algorithm="RS256", headers={"kid": "b"})
    # fetched at start less than jwks_min_refetch ago: no second read
    with pytest.raises(OidcError, match="'b' is not among"):
        await _verify(v, token)
    v.providers["p"].attempted_at = time.monotonic() - 3601
    assert (await _verify(v, token)).iss == ISSUER


async def test_periodic_refresh(tmp_path: Path) -> None:
    a, b = SigningKey("a"), SigningKey("b")
    v = _setup(tmp_path, [a.jwk], jwks_refresh=1, jwks_min_refetch=3600)
    await v.start()
    try:
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [b.jwk]}))
        for _ in range(40):
            await asyncio.sleep(0.1)
            if "b" in v.providers["p"].keys:
                break
        assert set(v.providers["p"].keys) == {"b"}
    finally:
        await v.aclose()


async def test_an_unreadable_key_file_fails_closed(tmp_path: Path) -> None:
    v = _setup(tmp_path, [])
    await v.start()
    a = SigningKey("a")
    token = jwt.encode(_claims(), a.private, algorithm="RS256", headers={"kid": "a"})
    with pytest.raises(OidcError) as info:
        await _verify(v, token)
    assert info.value.sqlstate == "28000"
    assert "could not be fetched" in str(info.value) and "no RSA, EC or OKP" in str(info.value)


def test_describe_age() -> None:
    assert [describe_age(s) for s in (5, 180, 3600, 3900, 200000)] == [
        "5s", "3m", "1h", "1h5m", "2d"
    ]  # fmt: skip


def _http_verifier(issuer: str, **cfg: Any) -> OidcVerifier:
    provider = OidcProviderConfig(
        name="p", issuer=issuer, audience=("wardgate",), **{"jwks_min_refetch": 60, **cfg}
    )
    return OidcVerifier([provider])


async def test_many_unknown_kids_at_once_cause_one_fetch() -> None:
    idp = FakeOidcProvider()
    v = _http_verifier(idp.issuer, jwks_min_refetch=1)
    try:
        await v.start()
        assert idp.requests == ["/.well-known/openid-configuration", "/jwks"]
        await asyncio.sleep(1.1)
        tokens = [idp.token(key=SigningKey(f"x{i}")) for i in range(2)] * 5
        results = await asyncio.gather(
            *(v.verify("ident", _binding(), t) for t in tokens), return_exceptions=True
        )
        assert all(isinstance(r, OidcError) and "is not among" in str(r) for r in results)
        assert idp.requests.count("/jwks") == 2  # at start, and once for all ten
    finally:
        await v.aclose()
        idp.stop()


async def test_a_provider_down_at_start_is_retried_in_the_background() -> None:
    port = free_port()
    v = _http_verifier(f"http://127.0.0.1:{port}", jwks_min_refetch=1)
    await v.start()
    idp = None
    try:
        assert v.providers["p"].error == "connection refused or host unreachable"
        idp = FakeOidcProvider(port)
        for _ in range(40):
            await asyncio.sleep(0.1)
            if v.providers["p"].keys:
                break
        token = idp.token(iss=idp.issuer)
        claims = await v.verify("ident", _binding(), token)
        assert claims.iss == idp.issuer
    finally:
        await v.aclose()
        if idp is not None:
            idp.stop()


async def test_a_discovery_document_for_another_issuer_is_refused() -> None:
    idp = FakeOidcProvider()
    v = _http_verifier(idp.issuer)
    idp.issuer = "https://impostor.example"  # what the discovery document now claims
    try:
        await v.start()
        assert "discovery document names issuer" in (v.providers["p"].error or "")
    finally:
        await v.aclose()
        idp.stop()


async def test_iat_in_the_future_is_not_valid_yet(tmp_path: Path) -> None:
    a = SigningKey("a")
    v = _setup(tmp_path, [a.jwk], leeway=5)
    await v.start()
    now = int(time.time())
    token = jwt.encode(
        _claims(iat=now + 600, exp=now + 900), a.private, algorithm="RS256", headers={"kid": "a"}
    )
    with pytest.raises(OidcError, match=r"token is not valid yet \(for (9|10)m\)"):
        await _verify(v, token)
