"""OIDC identities: an agent's password is a short-lived ID token (a JWT) from its CI platform.

Theory of operation
-------------------
Each configured provider gets a `ProviderKeys`: the provider's JSON Web Key Set, fetched
with httpx (from `jwks:`, or from the `jwks_uri` of `<issuer>/.well-known/openid-configuration`)
or read from `jwks: file:PATH`, and kept in memory by key id. `OidcVerifier.start()` fetches
every set once (a provider that cannot be reached is logged, not fatal: token identities
still work) and then refreshes them every `jwks_refresh`. A token whose `kid` is not in the
set makes the set be fetched again, at most once per `jwks_min_refetch`, which is how a
provider's key rotation is picked up without letting anyone make the gateway hammer the
provider with made-up key ids.

`verify(binding, token)` then checks, in this order: the header's `alg` is one of the
provider's allowed (asymmetric) algorithms, never one the token chooses on its own; the key
named by `kid` exists and its type fits that algorithm; the signature, `iss`, `aud`, `exp`,
`nbf` and `iat` (PyJWT, with the provider's leeway); the optional maximum lifetime; and last
the identity's claim rules (exact values or `fnmatch` patterns, case-sensitive).

Every failure is an `OidcError` whose message says what is wrong in words an operator can
act on ("token expired 3m ago") and never contains the token, a signature or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from wardgate.config import OidcBinding, OidcProviderConfig

__all__ = ["OidcError", "OidcClaims", "OidcVerifier", "ProviderKeys", "describe_age"]

# an ID token is a few kB; anything much larger is not one (and is not worth parsing)
MAX_TOKEN_BYTES = 16 * 1024
# a JWKS document is a few kB too
MAX_JWKS_BYTES = 1024 * 1024


class OidcError(Exception):
    """A token that does not authenticate; `reason` is a short fixed label for metrics."""

    def __init__(self, message: str, *, reason: str, sqlstate: str = "28P01") -> None:
        super().__init__(message)
        self.reason = reason
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class OidcClaims:
    """What a verified token says, for the session's evidence (never the token itself)."""

    provider: str
    iss: str
    sub: str | None
    jti: str | None
    exp: int
    iat: int | None
    extra_groups: tuple[str, ...] = ()

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider,
            "iss": self.iss,
            "sub": self.sub,
            "exp": _iso(self.exp),
        }
        if self.jti is not None:
            out["jti"] = self.jti
        if self.iat is not None:
            out["iat"] = _iso(self.iat)
        if self.extra_groups:
            out["groups"] = list(self.extra_groups)
        return out


def _iso(ts: int | float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def describe_age(seconds: float) -> str:
    """`42s`, `3m`, `2h5m`, `3d`: how far a time is from now, for messages."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    return f"{s // 86400}d"


# --------------------------------------------------------------------------- keys


@dataclass
class ProviderKeys:
    """One provider's key set, fetched on demand and kept by key id."""

    cfg: OidcProviderConfig
    log: Callable[..., None]
    # kid ("" for a key without one) -> the JWK as published
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float | None = None  # monotonic time of the last successful fetch
    attempted_at: float | None = None  # monotonic time of the last attempt
    error: str | None = None  # why the last attempt failed
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def source(self) -> str:
        if self.cfg.jwks is not None:
            return self.cfg.jwks
        return self.cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def refresh(self, *, why: str, only_if_due: bool = False) -> bool:
        """Fetch the set again; True if it could be fetched. Never raises.

        only_if_due: skip it (False) unless `jwks_min_refetch` has passed since the last
        attempt, checked under the lock so that many tokens with unknown key ids arriving
        together cause one fetch, not one each."""
        async with self._lock:
            if only_if_due and not self.may_refetch():
                return False
            self.attempted_at = time.monotonic()
            try:
                keys = await asyncio.wait_for(self._fetch(), self.cfg.jwks_timeout)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
                self.error = _fetch_error(exc)
                self.log(
                    "oidc_keys_unavailable",
                    provider=self.cfg.name,
                    source=self.source,
                    error=self.error,
                    why=why,
                )
                return False
            added = sorted(set(keys) - set(self.keys))
            self.keys, self.fetched_at, self.error = keys, time.monotonic(), None
            self.log(
                "oidc_keys_fetched",
                provider=self.cfg.name,
                source=self.source,
                keys=len(keys),
                added=[k or "(no kid)" for k in added],
                why=why,
            )
            return True

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        path = self.cfg.jwks_file()
        if path is not None:
            text = await asyncio.to_thread(path.read_bytes)
            return parse_jwks(text[: MAX_JWKS_BYTES + 1])
        async with httpx.AsyncClient(timeout=self.cfg.jwks_timeout, follow_redirects=False) as c:
            url = self.cfg.jwks
            if url is None:
                doc = await _get_json(c, self.source)
                if doc.get("issuer") != self.cfg.issuer:
                    raise _FetchError(
                        f"the discovery document names issuer {str(doc.get('issuer'))[:200]!r}, "
                        f"not {self.cfg.issuer!r}"
                    )
                url = doc.get("jwks_uri")
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise _FetchError("the discovery document has no jwks_uri")
                if url.startswith("http://") and not self.cfg.issuer.startswith("http://"):
                    raise _FetchError("the discovery document's jwks_uri is not https")
            return parse_jwks(json.dumps(await _get_json(c, url)).encode())

    def lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self.keys.get(kid)
        # a token without kid: only unambiguous when the set holds exactly one key
        return next(iter(self.keys.values())) if len(self.keys) == 1 else None

    def next_due(self) -> float:
        """When (monotonic) the background task should fetch this set again."""
        last = self.attempted_at if self.attempted_at is not None else time.monotonic()
        if self.error is not None:
            return last + max(self.cfg.jwks_min_refetch, 1.0)
        return last + self.cfg.jwks_refresh

    def may_refetch(self) -> bool:
        last = self.attempted_at
        return last is None or time.monotonic() - last >= self.cfg.jwks_min_refetch


class _FetchError(Exception):
    pass


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    resp = await client.get(url, headers={"Accept": "application/json"})
    if resp.status_code != 200:
        raise _FetchError(f"{url} answered HTTP {resp.status_code}")
    if len(resp.content) > MAX_JWKS_BYTES:
        raise _FetchError(f"{url} answered more than {MAX_JWKS_BYTES} bytes")
    try:
        doc = resp.json()
    except ValueError:
        raise _FetchError(f"{url} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise _FetchError(f"{url} did not answer a JSON object")
    return doc


def _fetch_error(exc: BaseException) -> str:
    if isinstance(exc, _FetchError):
        return str(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def parse_jwks(data: bytes) -> dict[str, dict[str, Any]]:
    """A JWKS document -> {kid: jwk} of the signature keys it holds."""
    if len(data) > MAX_JWKS_BYTES:
        raise _FetchError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError:
        raise _FetchError("the key set is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _FetchError('the key set has no "keys" list')
    keys: dict[str, dict[str, Any]] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # "oct" (a shared secret) is never a provider's signing key
        if any(p in jwk for p in ("d", "p", "q")):
            continue  # a private key published by mistake: do not use it
        kid = jwk.get("kid", "")
        keys[str(kid)] = jwk
    if not keys:
        raise _FetchError("the key set holds no RSA, EC or OKP signature key")
    return keys


# --------------------------------------------------------------------------- verify


class OidcVerifier:
    """Every configured provider's keys, and token verification against them."""

    def __init__(
        self,
        providers: Iterable[OidcProviderConfig],
        *,
        log: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log or (lambda *_a, **_k: None)
        self.providers = {p.name: ProviderKeys(p, self._log) for p in providers}
        self._clock = clock
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Fetch every provider's keys once, then keep them fresh in the background."""
        if not self.providers:
            return
        await asyncio.gather(*(p.refresh(why="start") for p in self.providers.values()))
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh_loop(self) -> None:
        # each provider every jwks_refresh; one whose last fetch failed (down at start,
        # say) every jwks_min_refetch, so its identities work soon after it is back
        while True:
            now = time.monotonic()
            due = {p.cfg.name: p.next_due() for p in self.providers.values()}
            await asyncio.sleep(min(max(min(due.values()) - now, 1.0), 3600.0))
            now = time.monotonic()
            for p in self.providers.values():
                if p.next_due() <= now + 0.5:
                    await p.refresh(why="periodic" if p.error is None else "retry")

    async def verify(self, identity: str, binding: OidcBinding, token: str) -> OidcClaims:
        keys = self.providers[binding.provider]
        cfg = keys.cfg
        if len(token) > MAX_TOKEN_BYTES:
            raise OidcError(
                f"the password is not an OIDC token (longer than {MAX_TOKEN_BYTES} bytes)",
                reason="oidc: malformed token",
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError(
                "the password is not an OIDC token (expected a signed JWT: header.payload.signature)",
                reason="oidc: malformed token",
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
            raise OidcError(
                f"token algorithm {shown} is not allowed for OIDC provider {cfg.name} "
                f"(allowed: {', '.join(cfg.algorithms)})",
                reason="oidc: algorithm not allowed",
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("token key id (kid) is not a string", reason="oidc: malformed token")
        jwk = await self._key(keys, kid)
        if "alg" in jwk and jwk["alg"] != alg:
            raise OidcError(
                f"token algorithm {alg} does not match the algorithm of key {kid!s:.64}",
                reason="oidc: algorithm not allowed",
            )
        try:
            key = PyJWK(jwk, algorithm=alg)
        except Exception:  # noqa: BLE001 - a key of the wrong type or a malformed one
            raise OidcError(
                f"key {kid!s:.64} of OIDC provider {cfg.name} cannot verify {alg} signatures",
                reason="oidc: algorithm not allowed",
            ) from None
        claims = self._decode(token, key, cfg)
        self._check_lifetime(claims, cfg)
        mismatched = [
            name for name, pats in binding.claims.items() if not _matches(claims, name, pats)
        ]
        if mismatched:
            raise OidcError(
                f"token claims do not match identity {identity}: {', '.join(mismatched)}",
                reason="oidc: claims do not match",
            )
        return OidcClaims(
            provider=cfg.name,
            iss=claims["iss"],
            sub=_short(claims.get("sub")),
            jti=_short(claims.get("jti")),
            exp=int(claims["exp"]),
            iat=int(claims["iat"]) if isinstance(claims.get("iat"), int | float) else None,
            extra_groups=_groups(claims, binding.groups_claim),
        )

    async def _key(self, keys: ProviderKeys, kid: str | None) -> dict[str, Any]:
        jwk = keys.lookup(kid)
        if jwk is not None:
            return jwk
        if keys.may_refetch():
            why = "unknown key id" if keys.keys else "no keys yet"
            await keys.refresh(why=why, only_if_due=True)
            jwk = keys.lookup(kid)
            if jwk is not None:
                return jwk
        if not keys.keys:
            raise OidcError(
                f"wardgate cannot verify tokens of OIDC provider {keys.cfg.name}: its keys "
                f"could not be fetched from {keys.source} ({keys.error or 'not fetched yet'})",
                reason="oidc: keys unavailable",
                sqlstate="28000",
            )
        shown = "none" if kid is None else repr(kid[:64])
        raise OidcError(
            f"token key id {shown} is not among the keys of OIDC provider {keys.cfg.name}",
            reason="oidc: unknown key",
        )

    def _decode(self, token: str, key: PyJWK, cfg: OidcProviderConfig) -> dict[str, Any]:
        required = ["exp", "iat", "iss", "aud"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(cfg.algorithms),
                audience=list(cfg.audience),
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": required, "verify_signature": True},
            )
        except jwt.InvalidSignatureError:
            raise OidcError(
                f"token signature does not verify with the keys of OIDC provider {cfg.name}",
                reason="oidc: bad signature",
            ) from None
        except jwt.ExpiredSignatureError:
            exp = _unverified(token).get("exp")
            ago = describe_age(self._clock() - exp) if isinstance(exp, int | float) else "?"
            raise OidcError(f"token expired {ago} ago", reason="oidc: expired") from None
        except jwt.ImmatureSignatureError:
            # nbf in the future, or iat (PyJWT checks both)
            payload = _unverified(token)
            starts = [payload.get(c) for c in ("nbf", "iat")]
            starts = [t for t in starts if isinstance(t, int | float)]
            left = describe_age(max(starts) - self._clock()) if starts else "?"
            raise OidcError(
                f"token is not valid yet (for {left})", reason="oidc: not yet valid"
            ) from None
        except jwt.InvalidIssuerError:
            iss = _unverified(token).get("iss")
            shown = repr(iss[:200]) if isinstance(iss, str) else "missing"
            raise OidcError(
                f"token issuer {shown} is not {cfg.issuer} (OIDC provider {cfg.name})",
                reason="oidc: wrong issuer",
            ) from None
        except jwt.InvalidAudienceError:
            raise OidcError(
                f"token audience is not {' or '.join(cfg.audience)}",
                reason="oidc: wrong audience",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(
                f"token has no {exc.claim} claim", reason="oidc: missing claim"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise OidcError(
                f"token algorithm is not allowed for OIDC provider {cfg.name}",
                reason="oidc: algorithm not allowed",
            ) from None
        except jwt.PyJWTError as exc:
            # DecodeError, InvalidIssuedAtError, ...: named by type, never by the library's
            # message (which could quote a piece of the token)
            raise OidcError(
                f"token is not valid ({type(exc).__name__})", reason="oidc: malformed token"
            ) from None
        return claims

    def _check_lifetime(self, claims: Mapping[str, Any], cfg: OidcProviderConfig) -> None:
        limit = cfg.max_token_lifetime
        if limit is None:
            return
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise OidcError("token has no iat claim", reason="oidc: missing claim")
        if exp - iat > limit + cfg.leeway:
            raise OidcError(
                f"token lifetime {describe_age(exp - iat)} exceeds max_token_lifetime "
                f"{describe_age(limit)} of OIDC provider {cfg.name}",
                reason="oidc: lifetime too long",
            )


def _unverified(token: str) -> dict[str, Any]:
    """The payload of a token whose signature PyJWT already checked (it checks the
    signature before the claims), to say by how much a claim missed."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


def _short(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:512]


def _claim_values(value: Any) -> list[str] | None:
    """A claim as strings: a string, number or boolean is one value, a list is many."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list):
        out = []
        for v in value:
            vs = _claim_values(v) if not isinstance(v, list) else None
            if vs:
                out.extend(vs)
        return out
    return None


def _matches(claims: Mapping[str, Any], name: str, patterns: tuple[str, ...]) -> bool:
    values = _claim_values(claims.get(name))
    if not values:
        return False
    # case-sensitive fnmatch: `repo:Acme/*` must not admit `repo:acme/...`
    return any(fnmatchcase(v, p) for v in values for p in patterns)


def _groups(claims: Mapping[str, Any], claim: str | None) -> tuple[str, ...]:
    if claim is None:
        return ()
    values = _claim_values(claims.get(claim)) or []
    return tuple(dict.fromkeys(v[:128] for v in values if v))[:64]
