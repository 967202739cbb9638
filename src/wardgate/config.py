"""The one YAML configuration file, validated at start.

`load_config(path)` parses the YAML with line information, validates it with pydantic,
and on failure raises `ConfigError` naming the file, the line, the key and what was
expected. Secrets are `SecretRef`s (`env:NAME`, `file:PATH`); `Config.check_secrets()`
resolves every one so a missing variable is named at start (its value never printed).

The policy and masking sections are validated by the models their packages own
(`wardgate.policy.model.PolicySpec`, `wardgate.masking.engine.MaskingConfig`).
"""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wardgate.secrets import SecretError, SecretRef

__all__ = [
    "AuthFailureLimit",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "IdentityConfig",
    "OidcBinding",
    "OidcProviderConfig",
    "OIDC_ALGORITHMS",
    "TargetConfig",
    "load_config",
    "parse_size",
    "parse_seconds",
    "DEFAULT_STORE",
]

DEFAULT_STORE = "./wardgate-data/audit.db"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


# --------------------------------------------------------------------------- helpers

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SECONDS_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: Any) -> int:
    """`1048576`, `"1MiB"`, `"512 kB"` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or '1MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as 1048576 or '1MiB'")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_seconds(value: Any) -> float:
    """`10`, `"10s"`, `"10m"`, `"1h"`, `"7d"`, `"250ms"` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 10m, 1h or 7d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|)\s*", str(value))
    if not m:
        raise ValueError("expected a duration such as 10s, 10m, 1h or 7d")
    return float(m.group(1)) * _SECONDS_UNITS[m.group(2)]


def _secret(value: Any) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a secret reference 'env:NAME' or 'file:PATH'")
    try:
        return SecretRef(value)
    except SecretError as exc:
        raise ValueError(str(exc)) from None


def _file_path(value: Any) -> Path:
    """`file:PATH` or a plain path."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a path or 'file:PATH'")
    return Path(value[5:] if value.startswith("file:") else value).expanduser()


Secret = Annotated[SecretRef, BeforeValidator(_secret)]
FilePath = Annotated[Path, BeforeValidator(_file_path)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _host_port(value: Any) -> tuple[str, int]:
    if isinstance(value, int):
        return ("127.0.0.1", value)
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:6432")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:6432")
    return (host.strip("[]") or "0.0.0.0", int(port))


HostPort = Annotated[tuple[str, int], BeforeValidator(_host_port)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --------------------------------------------------------------------------- sections


# asymmetric JWS algorithms only: a shared-secret (HS*) or unsigned (none) token could be
# made by anyone who has the provider's public key, or by anyone at all
OIDC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
)  # fmt: skip

_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _is_loopback_host(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _oidc_url(value: str, what: str) -> str:
    """https, or plain http to a loopback host (a test's key server)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and _is_loopback_host(parts.hostname):
        return value
    raise ValueError(f"expected an https:// URL for {what} (http:// only to a loopback host)")


class OidcProviderConfig(_Model):
    """An OpenID Connect provider whose ID tokens agents present as their password."""

    name: str = Field(min_length=1, max_length=63)
    issuer: str
    audience: tuple[str, ...] = Field(min_length=1)
    # where the signing keys come from: `https://.../jwks`, or `file:PATH` (air-gapped);
    # None: OpenID discovery at <issuer>/.well-known/openid-configuration
    jwks: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: Seconds = 60.0
    max_token_lifetime: Seconds | None = None
    # the key set is fetched again this often, and on a token with an unknown key id,
    # at most once per jwks_min_refetch
    jwks_refresh: Seconds = 3600.0
    jwks_min_refetch: Seconds = 60.0
    jwks_timeout: Seconds = 10.0

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _oidc_url(value, "issuer")

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, value: str | None) -> str | None:
        if value is None or value.startswith("file:"):
            if value is not None and len(value) == 5:
                raise ValueError("expected file:PATH or an https:// URL")
            return value
        return _oidc_url(value, "jwks")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one of " + ", ".join(OIDC_ALGORITHMS))
        for alg in value:
            if alg not in OIDC_ALGORITHMS:
                why = (
                    "symmetric and unsigned tokens are refused"
                    if alg.lower() == "none" or alg.upper().startswith("HS")
                    else "unknown algorithm"
                )
                raise ValueError(
                    f"{alg!r} is not allowed ({why}); use " + ", ".join(OIDC_ALGORITHMS)
                )
        return value

    def jwks_file(self) -> Path | None:
        if self.jwks is not None and self.jwks.startswith("file:"):
            return Path(self.jwks[5:]).expanduser()
        return None


def _claim_patterns(value: Any) -> Any:
    if isinstance(value, (str, int, bool)) and not isinstance(value, float):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("expected a value, an fnmatch pattern or a list of them")
    out = []
    for v in value:
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int)) or v == "":
            raise ValueError("expected a value, an fnmatch pattern or a list of them")
        out.append(str(v))
    return tuple(out)


ClaimPatterns = Annotated[tuple[str, ...], BeforeValidator(_claim_patterns)]


class OidcBinding(_Model):
    """What a token of `provider` must carry to be this identity."""

    provider: str
    # claim name -> accepted values (exact, or fnmatch patterns: `*`, `?`, `[...]`);
    # a list means any of them. Every named claim must match.
    claims: dict[str, ClaimPatterns] = Field(min_length=1)
    # a claim whose value(s) become extra groups of the session
    groups_claim: str | None = None


class IdentityConfig(_Model):
    name: str = Field(min_length=1, max_length=63)
    # a static secret (SCRAM), or an OIDC binding (an ID token as the password): one of both
    token: Secret | None = None
    oidc: OidcBinding | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[Literal["agent", "reviewer", "admin"], ...] = ("agent",)
    disabled: bool = False
    description: str | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> IdentityConfig:
        if self.token is not None and self.oidc is not None:
            raise ValueError(
                f"identity {self.name!r} has both token and oidc: an identity authenticates "
                "with one of them"
            )
        if self.token is None and self.oidc is None:
            raise ValueError(
                f"identity {self.name!r} needs token: env:NAME (or file:PATH) or oidc: "
                "{provider: ..., claims: {...}}"
            )
        return self


class ListenerTLS(_Model):
    """TLS between agents and the gateway (answer SSLRequest with 'S')."""

    cert: FilePath
    key: FilePath
    required: bool = False  # refuse agents that do not ask for TLS


class TargetConfig(_Model):
    host: str
    port: int = 5432
    database: str
    user: str
    password: Secret | None = None
    tls: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    ca: FilePath | None = None
    connect_timeout: Seconds = 10.0

    @model_validator(mode="after")
    def _ca_for_verify(self) -> TargetConfig:
        if self.tls == "verify-full" and self.ca is None:
            raise ValueError("tls: verify-full needs ca: file:PATH")
        return self


class AuthFailureLimit(_Model):
    """Failed logins from one client address (IP) within `window` before further attempts
    from it are refused, without authentication, for `block`. Counted per gateway process."""

    failures: int = Field(default=10, ge=1)
    window: Seconds = 60.0
    block: Seconds = 60.0
    # addresses tracked at once (bounded memory); past it the oldest is forgotten
    max_addresses: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> AuthFailureLimit:
        if self.window <= 0 or self.block <= 0:
            raise ValueError("window and block must be longer than 0s")
        return self


class ConnectionConfig(_Model):
    name: str = Field(min_length=1, max_length=63)
    protocol: Literal["postgres"] = "postgres"
    listen: HostPort
    target: TargetConfig
    tls: ListenerTLS | None = None
    policies: tuple[str, ...] = ("baseline",)
    on_unparsed: Literal["deny", "review"] = "deny"
    # per-statement byte budget for the rows kept in the record
    record_rows_budget: Size = 1024 * 1024
    allowed_identities: tuple[str, ...] | None = None  # None: every identity
    # sessions one identity may have open at once (per gateway process): every agent
    # shares the gateway's target role, so the target's per-role CONNECTION LIMIT cannot
    # keep one agent from taking every connection. None: no limit
    max_sessions_per_identity: int | None = Field(default=None, ge=1)
    allowed_groups: tuple[str, ...] | None = None
    # each failed login is recorded: without a limit one client can fill the audit store
    # (and guess tokens) as fast as it can connect. null: no limit
    auth_failure_limit: AuthFailureLimit | None = AuthFailureLimit()
    # OIDC tokens travel as cleartext passwords, so only over TLS; true lets an agent on
    # the same host send one without TLS (tests), never a remote agent
    allow_oidc_without_tls_on_loopback: bool = False

    @model_validator(mode="after")
    def _loopback_only(self) -> ConnectionConfig:
        if self.allow_oidc_without_tls_on_loopback and not _is_loopback_host(self.listen[0]):
            raise ValueError(
                "allow_oidc_without_tls_on_loopback needs a loopback listen address "
                f"(127.0.0.1 or ::1), not {self.listen[0]}"
            )
        return self


class AuditConfig(_Model):
    durability: Literal["full", "normal"] = "full"
    # where the store's writer (hashing, SQLite, fsync) and the checkpointer run: "process"
    # is a child process on another core; "thread" is a thread of the gateway's own
    # process, which shares its interpreter lock with the event loop
    writer: Literal["thread", "process"] = "process"


class CheckpointConfig(_Model):
    interval_seconds: Seconds = Field(default=10.0, alias="interval")
    origin: str = Field(default_factory=lambda: f"wardgate/{socket.gethostname()}")
    key_file: FilePath = Path("./wardgate-data/checkpoint.key")
    publish: FilePath | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ApprovalsConfig(_Model):
    reviewer_groups: tuple[str, ...] = ()
    default_ttl: Seconds = 600.0
    poll_interval: Seconds = 0.5


class ApiConfig(_Model):
    listen: HostPort | None = None
    metrics: bool = True  # GET /metrics (Prometheus text) on the API's listener


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(_Model):
    store: str = DEFAULT_STORE
    audit: AuditConfig = AuditConfig()
    identities: tuple[IdentityConfig, ...] = ()
    oidc_providers: tuple[OidcProviderConfig, ...] = ()
    connections: tuple[ConnectionConfig, ...] = Field(min_length=1)
    policies: tuple[Any, ...] = ()
    masking: Any = None
    approvals: ApprovalsConfig = ApprovalsConfig()
    checkpoints: CheckpointConfig = CheckpointConfig()
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    # gateway processes sharing the listen ports (SO_REUSEPORT) and one audit writer;
    # 1: one process (`wardgate serve --workers N` overrides)
    workers: int = Field(default=1, ge=1, le=256)
    # where the file came from, for messages
    source: str | None = None

    @field_validator("policies", mode="before")
    @classmethod
    def _policies(cls, value: Any) -> Any:
        if value is None:
            return ()
        try:
            from wardgate.policy.model import PolicySpec
        except ImportError:  # pragma: no cover - policy package always ships
            return tuple(value)
        if not isinstance(value, list):
            raise ValueError("expected a list of policies")
        return tuple(PolicySpec.model_validate(v) for v in value)

    @field_validator("masking", mode="before")
    @classmethod
    def _masking(cls, value: Any) -> Any:
        try:
            from wardgate.masking.engine import MaskingConfig
        except ImportError:  # pragma: no cover
            return value
        return MaskingConfig.model_validate(value or {})

    @model_validator(mode="after")
    def _unique(self) -> Config:
        if not (self.store.startswith("sqlite://") or "://" not in self.store):
            raise ValueError(
                "store: expected sqlite:///ABSOLUTE/PATH.db, sqlite://RELATIVE/PATH.db or a path"
            )
        for what, items in (
            ("identities", self.identities),
            ("connections", self.connections),
            ("oidc_providers", self.oidc_providers),
        ):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{what}: name {item.name!r} is used twice")
                seen.add(item.name)
        providers = {p.name for p in self.oidc_providers}
        for ident in self.identities:
            if ident.oidc is not None and ident.oidc.provider not in providers:
                raise ValueError(
                    f"identity {ident.name!r}: oidc provider {ident.oidc.provider!r} is not "
                    "defined under oidc_providers"
                    + (f" (defined: {', '.join(sorted(providers))})" if providers else "")
                )
        listens: set[tuple[str, int]] = set()
        for conn in self.connections:
            if conn.listen in listens:
                raise ValueError(
                    f"connections: listen {conn.listen[0]}:{conn.listen[1]} is used twice"
                )
            listens.add(conn.listen)
        self._check_policy_references()
        return self

    def _check_policy_references(self) -> None:
        """Unknown policy names, include cycles and the like fail at load, not at serve."""
        try:
            from wardgate.policy.engine import PolicyEngine
        except ImportError:  # pragma: no cover
            return
        try:
            PolicyEngine(
                list(self.policies),
                connection_policies={c.name: list(c.policies) for c in self.connections},
                on_unparsed={c.name: c.on_unparsed for c in self.connections},
            )
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"policies: {exc}") from None

    # ------------------------------------------------------------------ lookups

    def identity(self, name: str) -> IdentityConfig | None:
        for ident in self.identities:
            if ident.name == name:
                return ident
        return None

    def oidc_provider(self, name: str) -> OidcProviderConfig | None:
        for provider in self.oidc_providers:
            if provider.name == name:
                return provider
        return None

    def connection(self, name: str) -> ConnectionConfig | None:
        for conn in self.connections:
            if conn.name == name:
                return conn
        return None

    def store_path(self) -> Path:
        from wardgate.audit.store import parse_store_url

        return parse_store_url(self.store)

    def check_secrets(self) -> None:
        """Resolve every secret reference once; raise ConfigError naming a missing one."""
        refs: list[tuple[str, SecretRef]] = []
        for i, ident in enumerate(self.identities):
            if ident.token is not None:
                refs.append((f"identities[{i}] ({ident.name}).token", ident.token))
        for i, conn in enumerate(self.connections):
            if conn.target.password is not None:
                refs.append(
                    (f"connections[{i}] ({conn.name}).target.password", conn.target.password)
                )
        tokens: dict[bytes, str] = {}
        for where, ref in refs:
            try:
                value = ref.resolve()
            except SecretError as exc:
                raise ConfigError(f"{self.source or 'config'}: {where}: {exc}") from None
            # one token, two identities: whoever holds it logs in, and calls the API, as
            # either (an agent approved its own held statement through a reviewer sharing
            # its token); a target password that is also a token is a credential the agent
            # holds. Compared by digest, never printed. (Tokens come first in `refs`.)
            digest = hashlib.sha256(value.encode()).digest()
            if digest in tokens and where.startswith("identities["):
                raise ConfigError(
                    f"{self.source or 'config'}: {where}: the same token as {tokens[digest]}: "
                    "each identity needs a token of its own"
                )
            if digest in tokens:
                raise ConfigError(
                    f"{self.source or 'config'}: {where}: the same secret as {tokens[digest]}: "
                    "an agent would hold the target's credential"
                )
            if where.startswith("identities["):
                tokens[digest] = where


# --------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key and sequence item."""


def _node_lines(node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, path + (i,), out)


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    loc = tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    )
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping at the top level")
    lines: dict[tuple, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    data = dict(data)
    data["source"] = source
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        errors = exc.errors(include_input=False, include_url=False)
        deeper = {tuple(e.get("loc", ()))[:1] for e in errors if len(e.get("loc", ())) > 1}
        for err in errors:
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "too_short" and loc in deeper:
                continue  # a list whose items failed: the item errors say why
            line = _line_for(loc, lines)
            key = ".".join(str(p) for p in loc if not (isinstance(p, str) and "[" in p)) or "(top)"
            msg = err.get("msg", "invalid")
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(f"{source}:{line or '?'}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None


def load_config(path: str | Path, *, check_secrets: bool = False) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    cfg = parse_config(text, str(path))
    if check_secrets:
        cfg.check_secrets()
    return cfg
