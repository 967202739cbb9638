"""OIDC settings: what the configuration accepts, and what it refuses with which words."""

from __future__ import annotations

import textwrap

import pytest

from wardgate.config import ConfigError, parse_config

BASE = """
connections:
  - name: orders
    listen: 127.0.0.1:6432
    target: {host: 127.0.0.1, database: orders, user: app}
"""

PROVIDER = """
oidc_providers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audience: wardgate
"""


def _load(text: str):
    return parse_config(textwrap.dedent(text) + BASE, "w.yaml")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(text)
    return str(info.value)


def test_a_provider_and_an_oidc_identity_load_with_defaults() -> None:
    cfg = _load(
        PROVIDER
        + """
identities:
  - name: ci-deploy
    oidc:
      provider: github
      claims:
        sub: "repo:acme/api:ref:refs/heads/main"
        repository_owner: acme
        run_attempt: 1
      groups_claim: environment
  - name: ci-bot
    token: env:WG_TOKEN
"""
    )
    p = cfg.oidc_provider("github")
    assert p is not None and p.audience == ("wardgate",)
    assert p.jwks is None and p.algorithms == ("RS256",)
    assert p.leeway == 60 and p.max_token_lifetime is None and p.jwks_refresh == 3600
    ident = cfg.identity("ci-deploy")
    assert ident is not None and ident.token is None and ident.oidc is not None
    assert ident.oidc.claims["sub"] == ("repo:acme/api:ref:refs/heads/main",)
    assert ident.oidc.claims["run_attempt"] == ("1",)
    assert ident.oidc.groups_claim == "environment"
    assert cfg.connections[0].allow_oidc_without_tls_on_loopback is False


def test_jwks_by_url_or_file_and_every_asymmetric_algorithm() -> None:
    cfg = _load(
        """
oidc_providers:
  - name: gitlab
    issuer: https://gitlab.example.com
    audience: [wardgate, wardgate-staging]
    jwks: https://gitlab.example.com/oauth/discovery/keys
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
    leeway: 30s
    max_token_lifetime: 1h
  - name: airgap
    issuer: https://idp.internal
    audience: wardgate
    jwks: file:/etc/wardgate/jwks.json
"""
    )
    assert cfg.oidc_providers[0].audience == ("wardgate", "wardgate-staging")
    assert cfg.oidc_providers[0].max_token_lifetime == 3600
    assert str(cfg.oidc_providers[1].jwks_file()) == "/etc/wardgate/jwks.json"


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none"])
def test_symmetric_and_unsigned_algorithms_are_refused(alg: str) -> None:
    text = _error(PROVIDER + f"    algorithms: [RS256, {alg}]\n")
    assert "oidc_providers.0.algorithms" in text
    assert f"'{alg}' is not allowed (symmetric and unsigned tokens are refused)" in text
    assert "w.yaml:" in text


def test_an_unknown_algorithm_is_named() -> None:
    assert "'RS1' is not allowed (unknown algorithm)" in _error(
        PROVIDER + "    algorithms: [RS1]\n"
    )


def test_an_identity_with_token_and_oidc_is_refused_by_name() -> None:
    text = _error(
        PROVIDER
        + """
identities:
  - name: ci-deploy
    token: env:WG_TOKEN
    oidc: {provider: github, claims: {sub: "repo:acme/*"}}
"""
    )
    assert "identity 'ci-deploy' has both token and oidc" in text


def test_an_identity_with_neither_is_refused_by_name() -> None:
    text = _error("identities:\n  - name: lonely\n    groups: [ci]\n")
    assert "identity 'lonely' needs token: env:NAME" in text


def test_an_unknown_provider_is_named() -> None:
    text = _error(
        PROVIDER
        + """
identities:
  - name: ci-deploy
    oidc: {provider: gitlab, claims: {sub: x}}
"""
    )
    assert "identity 'ci-deploy': oidc provider 'gitlab' is not defined" in text
    assert "(defined: github)" in text


def test_claim_rules_are_required() -> None:
    text = _error(
        PROVIDER
        + """
identities:
  - name: ci-deploy
    oidc: {provider: github, claims: {}}
"""
    )
    assert "identities.0.oidc.claims" in text


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("issuer: http://idp.example.com", "expected an https:// URL for issuer"),
        ("jwks: http://idp.example.com/keys", "expected an https:// URL for jwks"),
        ("jwks: 'file:'", "expected file:PATH"),
    ],
)
def test_plain_http_only_to_loopback(setting: str, expected: str) -> None:
    text = _error(
        f"""
oidc_providers:
  - name: p
    audience: wardgate
    {"issuer: https://idp.example.com" if not setting.startswith("issuer") else setting}
    {setting if not setting.startswith("issuer") else ""}
"""
    )
    assert expected in text
    # a local key server (tests) is fine
    _load("oidc_providers:\n  - {name: p, audience: a, issuer: 'http://127.0.0.1:8080'}\n")


def test_provider_names_are_unique() -> None:
    text = _error(PROVIDER + "  - {name: github, issuer: 'https://x.example', audience: a}\n")
    assert "oidc_providers: name 'github' is used twice" in text


def test_plaintext_oidc_only_on_a_loopback_listener() -> None:
    text = _error_conn("0.0.0.0:6432")
    assert "allow_oidc_without_tls_on_loopback needs a loopback listen address" in text
    _error_conn("127.0.0.1:6432", expect_error=False)


def _error_conn(listen: str, *, expect_error: bool = True) -> str:
    text = f"""
connections:
  - name: orders
    listen: {listen}
    allow_oidc_without_tls_on_loopback: true
    target: {{host: 127.0.0.1, database: orders, user: app}}
"""
    if not expect_error:
        parse_config(text, "w.yaml")
        return ""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "w.yaml")
    return str(info.value)
