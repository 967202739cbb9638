"""PostgreSQL authentication primitives: SCRAM-SHA-256 (both sides) and md5, sans-IO.

Theory of operation
-------------------
SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL and libpq speak it, without channel
binding. The server side is a two-step object::

    server = ScramServer(verifier)                 # or ScramServer(lookup_callable)
    server_first = server.handle_client_first(sasl_initial_response_data)
    server_final = server.handle_client_final(sasl_response_data)  # raises on a bad proof

The engine usually knows the user from the startup packet (libpq sends an empty ``n=``), so
it passes the verifier directly. For a user it does not know it passes
``ScramVerifier.dummy(username, key)``: the exchange runs to the end with a salt that is
stable per user and fails at the proof check, exactly like a wrong password, so an agent
cannot tell unknown users from wrong passwords (PostgreSQL's "mock authentication").

The client side (``ScramClient``) is what the gateway uses toward the target.

Passwords are normalised with SASLprep (RFC 4013, via the stdlib ``stringprep`` tables)
the way PostgreSQL does it: pure ASCII passes unchanged, and if SASLprep fails (prohibited
characters, bad bidi) the raw password is used. Comparisons of secrets use
``hmac.compare_digest``. Keys are kept out of ``repr`` so they do not reach logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from wardgate.wire.pg.framing import ProtocolError

__all__ = [
    "SCRAM_SHA_256",
    "AuthenticationFailed",
    "ScramVerifier",
    "make_scram_verifier",
    "parse_scram_verifier",
    "ScramServer",
    "ScramClient",
    "saslprep",
    "md5_password",
    "md5_verify",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
_NONCE_BYTES = 18  # as PostgreSQL: 18 random bytes, 24 base64 characters
_KEY_LEN = 32
_VERIFIER_RE = re.compile(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$")


class AuthenticationFailed(Exception):
    """Wrong password, unknown user, or a server that failed to prove itself."""


# -- primitives -----------------------------------------------------------------------------


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise ProtocolError(f"malformed SCRAM message: invalid base64 in {what}") from exc


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep for stored strings; raises ValueError when the string is prohibited."""
    mapped = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")
        elif not stringprep.in_table_b1(ch):
            mapped.append(ch)
    out = unicodedata.normalize("NFKC", "".join(mapped))
    if not out:
        raise ValueError("SASLprep: empty after mapping")
    for ch in out:
        if (
            stringprep.in_table_c12(ch)
            or stringprep.in_table_c21_c22(ch)
            or stringprep.in_table_c3(ch)
            or stringprep.in_table_c4(ch)
            or stringprep.in_table_c5(ch)
            or stringprep.in_table_c6(ch)
            or stringprep.in_table_c7(ch)
            or stringprep.in_table_c8(ch)
            or stringprep.in_table_c9(ch)
            or stringprep.in_table_a1(ch)
        ):
            raise ValueError("SASLprep: prohibited character")
    if any(stringprep.in_table_d1(ch) for ch in out):
        if any(stringprep.in_table_d2(ch) for ch in out):
            raise ValueError("SASLprep: mixed bidirectional text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("SASLprep: bidirectional text must start and end RandALCat")
    return out


def _password_bytes(password: str | bytes) -> bytes:
    """The bytes PostgreSQL hashes: SASLprep'd if possible, raw otherwise."""
    if isinstance(password, bytes):
        try:
            password = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    if password.isascii():
        return password.encode("ascii")
    try:
        return saslprep(password).encode("utf-8")
    except ValueError:
        return password.encode("utf-8", "surrogateescape")


def _salted_password(password: str | bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", _password_bytes(password), salt, iterations)


# -- verifier -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What the server stores for a SCRAM-SHA-256 user (never the password)."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    is_dummy: bool = False  # a stand-in for an unknown user: always fails

    def to_string(self) -> str:
        """PostgreSQL's ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``."""
        return (
            f"{SCRAM_SHA_256}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def parse(cls, text: str) -> ScramVerifier:
        match = _VERIFIER_RE.match(text)
        if match is None:
            raise ValueError("not a SCRAM-SHA-256 verifier")
        iterations = int(match.group(1))
        try:
            salt, stored, server = (
                base64.b64decode(match.group(i), validate=True) for i in (2, 3, 4)
            )
        except binascii.Error as exc:
            raise ValueError("invalid base64 in SCRAM-SHA-256 verifier") from exc
        if iterations < 1 or len(stored) != _KEY_LEN or len(server) != _KEY_LEN:
            raise ValueError("invalid SCRAM-SHA-256 verifier")
        return cls(salt, iterations, stored, server)

    @classmethod
    def dummy(cls, username: str, key: bytes, *, iterations: int = 4096) -> ScramVerifier:
        """A verifier for an unknown user: stable salt per (key, user), never succeeds."""
        digest = _hmac(key, b"wardgate-scram-mock\0" + username.encode("utf-8", "surrogateescape"))
        return cls(
            salt=digest[:16],
            iterations=iterations,
            stored_key=_hmac(key, b"stored\0" + digest),
            server_key=_hmac(key, b"server\0" + digest),
            is_dummy=True,
        )


def make_scram_verifier(
    password: str | bytes, *, iterations: int = 4096, salt: bytes | None = None
) -> ScramVerifier:
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = _salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramVerifier(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


def parse_scram_verifier(text: str) -> ScramVerifier:
    return ScramVerifier.parse(text)


# -- message parsing ------------------------------------------------------------------------


def _text(data: bytes, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed SCRAM message: {what} is not UTF-8") from exc


def _attr(part: str, name: str, what: str) -> str:
    if not part.startswith(name + "="):
        raise ProtocolError(f"malformed SCRAM message: expected attribute {name!r} in {what}")
    return part[2:]


def _valid_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in nonce)


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unsaslname(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


# -- server ---------------------------------------------------------------------------------

VerifierLookup = Callable[[str], "ScramVerifier | None"]


class ScramServer:
    """Server side of one SCRAM-SHA-256 exchange.

    ``verifier`` is the user's ``ScramVerifier`` or a callable ``username -> verifier|None``
    called with the ``n=`` user of the client-first message. A None verifier (unknown user)
    is replaced by a dummy so the exchange still runs to its (failed) end.
    """

    def __init__(
        self,
        verifier: ScramVerifier | VerifierLookup,
        *,
        server_nonce: str | None = None,
        dummy_key: bytes | None = None,
    ) -> None:
        self._source = verifier
        self._server_nonce = server_nonce or _b64(secrets.token_bytes(_NONCE_BYTES))
        if not _valid_nonce(self._server_nonce):
            raise ValueError("server nonce must be printable ASCII without ','")
        self._dummy_key = dummy_key if dummy_key is not None else _PROCESS_DUMMY_KEY
        self._verifier: ScramVerifier | None = None
        self._state = "first"
        self.username: str | None = None
        self.authenticated = False
        self._gs2_header = ""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    @property
    def done(self) -> bool:
        return self._state == "done"

    def handle_client_first(self, data: bytes) -> bytes:
        """client-first-message -> server-first-message."""
        if self._state != "first":
            raise ProtocolError("unexpected SCRAM client-first message")
        self._state = "failed"
        text = _text(data, "client-first-message")
        # gs2-header: cbind-flag "," [authzid] ","
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ProtocolError("malformed SCRAM message: client-first-message is incomplete")
        flag, authzid, bare = parts
        if flag.startswith("p="):
            raise ProtocolError(
                "channel binding is not supported by this server; "
                "connect with channel_binding=disable or prefer"
            )
        if flag not in ("n", "y"):
            raise ProtocolError("malformed SCRAM message: invalid channel binding flag")
        if authzid:
            raise ProtocolError("client uses authorization identity, but it is not supported")
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise ProtocolError("client requires an unsupported SCRAM extension")
        if len(attrs) < 2:
            raise ProtocolError("malformed SCRAM message: client-first-message is incomplete")
        username = _unsaslname(_attr(attrs[0], "n", "client-first-message"))
        client_nonce = _attr(attrs[1], "r", "client-first-message")
        if not _valid_nonce(client_nonce):
            raise ProtocolError("malformed SCRAM message: invalid client nonce")
        self.username = username
        source = self._source
        verifier = source if isinstance(source, ScramVerifier) else source(username)
        if verifier is None:
            verifier = ScramVerifier.dummy(username, self._dummy_key)
        self._verifier = verifier
        self._gs2_header = f"{flag},{authzid},"
        self._nonce = client_nonce + self._server_nonce
        self._client_first_bare = bare
        self._server_first = f"r={self._nonce},s={_b64(verifier.salt)},i={verifier.iterations}"
        self._state = "final"
        return self._server_first.encode("ascii")

    def handle_client_final(self, data: bytes) -> bytes:
        """client-final-message -> server-final-message; raises AuthenticationFailed."""
        if self._state != "final" or self._verifier is None:
            raise ProtocolError("unexpected SCRAM client-final message")
        self._state = "failed"
        text = _text(data, "client-final-message")
        head, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ProtocolError("malformed SCRAM message: client proof is missing")
        attrs = head.split(",")
        if len(attrs) < 2:
            raise ProtocolError("malformed SCRAM message: client-final-message is incomplete")
        cbind = _unb64(_attr(attrs[0], "c", "client-final-message"), "channel binding")
        if not hmac.compare_digest(cbind, self._gs2_header.encode("utf-8")):
            raise ProtocolError("SCRAM channel binding check failed")
        nonce = _attr(attrs[1], "r", "client-final-message")
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("utf-8")):
            raise ProtocolError("SCRAM nonce does not match")
        proof = _unb64(proof_b64, "client proof")
        if len(proof) != _KEY_LEN:
            raise ProtocolError("malformed SCRAM message: client proof has the wrong length")
        verifier = self._verifier
        auth_message = f"{self._client_first_bare},{self._server_first},{head}".encode()
        client_signature = _hmac(verifier.stored_key, auth_message)
        client_key = _xor(proof, client_signature)
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)
        if not ok or verifier.is_dummy:
            raise AuthenticationFailed(
                f'password authentication failed for user "{self.username or ""}"'
            )
        self.authenticated = True
        self._state = "done"
        return f"v={_b64(_hmac(verifier.server_key, auth_message))}".encode("ascii")


_PROCESS_DUMMY_KEY = secrets.token_bytes(32)


# -- client ---------------------------------------------------------------------------------


class ScramClient:
    """Client side of one SCRAM-SHA-256 exchange (the gateway toward its target)."""

    def __init__(
        self,
        username: str,
        password: str | bytes,
        *,
        nonce: str | None = None,
        max_iterations: int = 1_000_000,
        salted_cache: dict | None = None,
    ) -> None:
        self._username = username
        self._password = password
        # (sha256(password), salt, iterations) -> SaltedPassword: a caller that logs in
        # to the same server often (a gateway) pays the PBKDF2 cost once per salt
        self._salted_cache = salted_cache
        self._nonce = nonce or _b64(secrets.token_bytes(_NONCE_BYTES))
        if not _valid_nonce(self._nonce):
            raise ValueError("client nonce must be printable ASCII without ','")
        self._max_iterations = max_iterations
        self._client_first_bare = f"n={_saslname(username)},r={self._nonce}"
        self._server_signature: bytes | None = None
        self.authenticated = False

    mechanism = SCRAM_SHA_256

    def client_first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def handle_server_first(self, data: bytes) -> bytes:
        """server-first-message -> client-final-message."""
        server_first = _text(data, "server-first-message")
        attrs = server_first.split(",")
        if attrs and attrs[0].startswith("m="):
            raise ProtocolError("server requires an unsupported SCRAM extension")
        if len(attrs) < 3:
            raise ProtocolError("malformed SCRAM message: server-first-message is incomplete")
        nonce = _attr(attrs[0], "r", "server-first-message")
        salt = _unb64(_attr(attrs[1], "s", "server-first-message"), "salt")
        iterations_text = _attr(attrs[2], "i", "server-first-message")
        if not (nonce.startswith(self._nonce) and len(nonce) > len(self._nonce)):
            raise ProtocolError("SCRAM server nonce does not extend the client nonce")
        if not _valid_nonce(nonce):
            raise ProtocolError("malformed SCRAM message: invalid server nonce")
        if not (iterations_text.isascii() and iterations_text.isdigit()):
            raise ProtocolError("malformed SCRAM message: invalid iteration count")
        iterations = int(iterations_text)
        if not 1 <= iterations <= self._max_iterations:
            raise ProtocolError(f"SCRAM iteration count {iterations} is out of range")
        cache = self._salted_cache
        if cache is not None:
            pw = self._password.encode() if isinstance(self._password, str) else self._password
            key = (hashlib.sha256(pw).digest(), salt, iterations)
            salted = cache.get(key)
            if salted is None:
                salted = _salted_password(self._password, salt, iterations)
                if len(cache) > 64:
                    cache.clear()
                cache[key] = salted
        else:
            salted = _salted_password(self._password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        proof = _xor(client_key, _hmac(stored_key, auth_message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_server_final(self, data: bytes) -> None:
        """Check the server's signature; raises AuthenticationFailed if it is wrong."""
        if self._server_signature is None:
            raise ProtocolError("unexpected SCRAM server-final message")
        text = _text(data, "server-final-message")
        if text.startswith("e="):
            raise AuthenticationFailed(f"SCRAM server error: {text[2:66]}")
        signature = _unb64(_attr(text.split(",")[0], "v", "server-final-message"), "signature")
        if not hmac.compare_digest(signature, self._server_signature):
            raise AuthenticationFailed("SCRAM server signature is invalid")
        self.authenticated = True


# -- md5 --------------------------------------------------------------------------------------


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def md5_password(user: str | bytes, password: str | bytes, salt: bytes) -> bytes:
    """The md5 PasswordMessage payload: b"md5" + md5(md5(password + user) + salt)."""
    inner = hashlib.md5(_as_bytes(password) + _as_bytes(user)).hexdigest().encode("ascii")
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode("ascii")


def md5_verify(user: str | bytes, password: str | bytes, salt: bytes, response: bytes) -> bool:
    """Constant-time check of a client's md5 response (without its trailing NUL)."""
    return hmac.compare_digest(md5_password(user, password, salt), response.rstrip(b"\0"))
