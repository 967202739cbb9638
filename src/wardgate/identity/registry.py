"""Agent and reviewer identities, resolved from the config at start.

The registry keeps no raw token: for the PostgreSQL listener it keeps a SCRAM-SHA-256
verifier per identity (what PostgreSQL itself stores in pg_authid), and for bearer
authentication on the HTTP API a SHA-256 digest of the token. Tokens are high-entropy
secrets, so a digest is as strong a check as a slow hash and costs microseconds.

An OIDC-backed identity has no secret at all: it keeps its binding (provider and claim
rules), and `registry.oidc` (an `OidcVerifier`, `oidc.py`) checks the ID token an agent
presents. Such an identity cannot log in to the HTTP API with a bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from wardgate.config import Config, IdentityConfig, OidcBinding, OidcProviderConfig
from wardgate.identity.oidc import OidcVerifier
from wardgate.wire.pg.auth import ScramVerifier, make_scram_verifier

__all__ = ["Identity", "IdentityRegistry"]


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    disabled: bool
    oidc: OidcBinding | None = None  # None: a token-backed identity (SCRAM)


class IdentityRegistry:
    def __init__(
        self,
        identities: tuple[IdentityConfig, ...],
        *,
        reviewer_groups: tuple[str, ...] = (),
        oidc_providers: tuple[OidcProviderConfig, ...] = (),
    ):
        self._identities: dict[str, Identity] = {}
        self._verifiers: dict[str, ScramVerifier] = {}
        self._bearer: dict[bytes, str] = {}
        self._reviewer_groups = frozenset(reviewer_groups)
        # a per-process key for verifiers of unknown users, so an unknown user runs the
        # same exchange as a known one and fails only at the end
        self._dummy_key = secrets.token_bytes(32)
        # keys are fetched by `await registry.oidc.start()` (server.py), not here
        self.oidc = OidcVerifier(oidc_providers, log=_log_line)
        for cfg in identities:
            ident = Identity(cfg.name, tuple(cfg.groups), tuple(cfg.roles), cfg.disabled, cfg.oidc)
            self._identities[cfg.name] = ident
            if cfg.token is None:
                continue
            token = cfg.token.resolve()
            digest = hashlib.sha256(token.encode()).digest()
            if digest in self._bearer:  # Config.check_secrets says so first, with the file
                raise ValueError(
                    f"identities {self._bearer[digest]!r} and {cfg.name!r} have the same token"
                )
            self._verifiers[cfg.name] = make_scram_verifier(token)
            self._bearer[digest] = cfg.name
            del token

    @classmethod
    def from_config(cls, cfg: Config) -> IdentityRegistry:
        return cls(
            cfg.identities,
            reviewer_groups=cfg.approvals.reviewer_groups,
            oidc_providers=cfg.oidc_providers,
        )

    def get(self, name: str) -> Identity | None:
        return self._identities.get(name)

    def verifier(self, name: str) -> ScramVerifier:
        """The identity's SCRAM verifier, or a stable fake one for an unknown name."""
        v = self._verifiers.get(name)
        if v is not None:
            return v
        return ScramVerifier.dummy(name, self._dummy_key)

    def authenticate_bearer(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        for known, name in self._bearer.items():
            if hmac.compare_digest(known, digest):
                ident = self._identities[name]
                return None if ident.disabled else ident
        return None

    # ReviewerDirectory protocol (approvals)
    def is_reviewer(self, name: str) -> bool:
        ident = self._identities.get(name)
        if ident is None or ident.disabled:
            return False
        return "reviewer" in ident.roles or bool(self._reviewer_groups.intersection(ident.groups))

    def names(self) -> list[str]:
        return list(self._identities)


def _log_line(event: str, **fields: object) -> None:
    # the engine's structured stderr line, imported late: engines import this module
    from wardgate.engines.postgres.engine import log_line

    log_line(event, **fields)
