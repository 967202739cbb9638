"""A small OIDC provider for tests: a discovery document and a JWKS over real HTTP.

Keys are made with `cryptography`, tokens signed with PyJWT, and the key set can change
while the server runs (key rotation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        self.kind = kind
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update({"kid": kid, "use": "sig", "alg": self.alg})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class FakeOidcProvider:
    """Serves `/.well-known/openid-configuration` and `/jwks` on 127.0.0.1:<free port>."""

    def __init__(self, port: int = 0) -> None:
        self.keys: list[SigningKey] = [SigningKey("k1"), SigningKey("e1", "EC")]
        self.requests: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                provider.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": [k.jwk for k in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def key(self, kid: str) -> SigningKey:
        return next(k for k in self.keys if k.kid == kid)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": "wardgate",
            "sub": "repo:acme/api:ref:refs/heads/main",
            "repository": "acme/api",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "run_id": "4242",
            "jti": "job-7f1e2d",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "wardgate_groups": ["deployers", "acme-ci"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "k1", *, key: SigningKey | None = None, **overrides: Any) -> str:
        signer = key or self.key(kid)
        return jwt.encode(
            self.claims(**overrides),
            signer.private,
            algorithm=signer.alg,
            headers={"kid": signer.kid},
        )


def forged_token(header: dict[str, Any], claims: dict[str, Any], sign: bytes | None) -> str:
    """A token built by hand: `sign` is an HMAC-SHA256 key, or None for `alg: none`."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if sign is None:
        return head + "."
    mac = hmac.new(sign, head.encode(), hashlib.sha256).digest()
    return head + "." + b64url(mac)
