from __future__ import annotations

import base64
import secrets

import pytest

from wardgate.wire.pg import auth as a
from wardgate.wire.pg.framing import ProtocolError

# RFC 7677 section 3 test vector.
USER, PASSWORD = "user", "pencil"
CNONCE = "rOprNGfwEbeRWgbNEkqO"
SNONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.fixture(scope="module")
def rfc_verifier() -> a.ScramVerifier:
    return a.make_scram_verifier(PASSWORD, iterations=4096, salt=SALT)


def test_rfc7677_client() -> None:
    client = a.ScramClient(USER, PASSWORD, nonce=CNONCE)
    assert client.client_first() == CLIENT_FIRST
    assert client.handle_server_first(SERVER_FIRST) == CLIENT_FINAL
    client.verify_server_final(SERVER_FINAL)
    assert client.authenticated


def test_rfc7677_server(rfc_verifier: a.ScramVerifier) -> None:
    server = a.ScramServer(rfc_verifier, server_nonce=SNONCE)
    assert server.handle_client_first(CLIENT_FIRST) == SERVER_FIRST
    assert server.username == "user"
    assert server.handle_client_final(CLIENT_FINAL) == SERVER_FINAL
    assert server.authenticated and server.done


def test_client_rejects_bad_server_signature() -> None:
    client = a.ScramClient(USER, PASSWORD, nonce=CNONCE)
    client.handle_server_first(SERVER_FIRST)
    bad = b"v=" + base64.b64encode(b"\0" * 32)
    with pytest.raises(a.AuthenticationFailed):
        client.verify_server_final(bad)
    with pytest.raises(a.AuthenticationFailed, match="server error"):
        client.verify_server_final(b"e=invalid-proof")
    assert not client.authenticated


def test_client_rejects_nonce_not_extending_its_own() -> None:
    client = a.ScramClient(USER, PASSWORD, nonce=CNONCE)
    with pytest.raises(ProtocolError, match="nonce"):
        client.handle_server_first(b"r=somethingelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    client = a.ScramClient(USER, PASSWORD, nonce=CNONCE)
    with pytest.raises(ProtocolError, match="iteration"):
        client.handle_server_first(SERVER_FIRST.replace(b"i=4096", b"i=999999999"))


def _exchange(server: a.ScramServer, client: a.ScramClient) -> None:
    final = server.handle_client_first(client.client_first())
    server_final = server.handle_client_final(client.handle_server_first(final))
    client.verify_server_final(server_final)


@pytest.mark.parametrize("password", ["correct horse", "caf\u00e9 \u2603", ""])
def test_client_against_server_right_password(password: str) -> None:
    verifier = a.make_scram_verifier(password, iterations=64)
    server, client = a.ScramServer(verifier), a.ScramClient("", password)
    _exchange(server, client)
    assert server.authenticated and client.authenticated


def test_client_against_server_wrong_password() -> None:
    server = a.ScramServer(a.make_scram_verifier("right", iterations=64))
    client = a.ScramClient("", "wrong")
    with pytest.raises(a.AuthenticationFailed, match="password authentication failed"):
        _exchange(server, client)
    assert not server.authenticated
    with pytest.raises(ProtocolError):  # the exchange is over
        server.handle_client_final(b"c=biws,r=x,p=y")


def test_lookup_and_unknown_user_runs_full_exchange_then_fails() -> None:
    known = a.make_scram_verifier("pw", iterations=64)
    key = secrets.token_bytes(32)
    lookup = {"alice": known}.get

    server = a.ScramServer(lookup, dummy_key=key)
    _exchange(server, a.ScramClient("alice", "pw"))

    def first(user: str) -> bytes:
        return a.ScramServer(lookup, dummy_key=key).handle_client_first(
            a.ScramClient(user, "pw").client_first()
        )

    # An unknown user gets a normal-looking challenge with a stable salt...
    s1 = first("mallory").split(b",")[1:]
    s2 = first("mallory").split(b",")[1:]
    assert s1 == s2 and s1 != first("eve").split(b",")[1:]
    # ...and fails only at the proof, like a wrong password, even with "the" password.
    server = a.ScramServer(lookup, dummy_key=key)
    with pytest.raises(a.AuthenticationFailed):
        _exchange(server, a.ScramClient("mallory", "pw"))


def test_dummy_verifier_never_authenticates() -> None:
    dummy = a.ScramVerifier.dummy("ghost", b"k" * 32)
    assert dummy.is_dummy
    assert dummy == a.ScramVerifier.dummy("ghost", b"k" * 32)
    with pytest.raises(a.AuthenticationFailed):
        _exchange(a.ScramServer(dummy), a.ScramClient("ghost", ""))


def test_username_escaping_in_client_first() -> None:
    server = a.ScramServer(a.make_scram_verifier("pw", iterations=16))
    server.handle_client_first(a.ScramClient("a,b=c", "pw").client_first())
    assert server.username == "a,b=c"


@pytest.mark.parametrize(
    ("first", "match"),
    [
        (b"p=tls-server-end-point,,n=,r=abc", "channel binding"),
        (b"n,a=admin,n=,r=abc", "authorization identity"),
        (b"n,,m=ext,n=,r=abc", "extension"),
        (b"x,,n=,r=abc", "channel binding flag"),
        (b"n,,n=", "incomplete"),
        (b"n,,n=,r=", "nonce"),
        (b"n,,n=,r=a\x01b", "nonce"),
        (b"n,,\xff", "UTF-8"),
    ],
)
def test_server_rejects_malformed_client_first(first: bytes, match: str) -> None:
    server = a.ScramServer(a.make_scram_verifier("pw", iterations=16))
    with pytest.raises(ProtocolError, match=match):
        server.handle_client_first(first)


def test_server_accepts_y_flag_and_checks_channel_binding_echo() -> None:
    verifier = a.make_scram_verifier("pw", iterations=16)
    server = a.ScramServer(verifier, server_nonce="SN")
    server.handle_client_first(b"y,,n=,r=CN")
    with pytest.raises(ProtocolError, match="channel binding"):
        server.handle_client_final(b"c=biws,r=CNSN,p=" + base64.b64encode(b"\0" * 32))


@pytest.mark.parametrize(
    "final",
    [
        b"c=biws,r=CNXX,p=" + base64.b64encode(b"\0" * 32),  # wrong nonce
        b"c=biws,r=CNSN",  # no proof
        b"c=biws,r=CNSN,p=!!!",  # bad base64
        b"c=biws,r=CNSN,p=" + base64.b64encode(b"\0" * 8),  # short proof
    ],
)
def test_server_rejects_malformed_client_final(final: bytes) -> None:
    server = a.ScramServer(a.make_scram_verifier("pw", iterations=16), server_nonce="SN")
    server.handle_client_first(b"n,,n=,r=CN")
    with pytest.raises(ProtocolError):
        server.handle_client_final(final)


def test_out_of_order_calls() -> None:
    server = a.ScramServer(a.make_scram_verifier("pw", iterations=16))
    with pytest.raises(ProtocolError):
        server.handle_client_final(b"c=biws,r=x,p=y")
    with pytest.raises(ProtocolError):
        a.ScramClient("u", "p").verify_server_final(SERVER_FINAL)


def test_verifier_string_roundtrip_and_repr_hides_keys(rfc_verifier: a.ScramVerifier) -> None:
    text = rfc_verifier.to_string()
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert a.parse_scram_verifier(text) == rfc_verifier
    assert base64.b64encode(rfc_verifier.stored_key).decode() not in repr(rfc_verifier)
    for bad in ["md5abc", "SCRAM-SHA-256$0:AAAA$AAAA:AAAA", "SCRAM-SHA-256$4096:AA$!!:??"]:
        with pytest.raises(ValueError):
            a.ScramVerifier.parse(bad)


def test_saslprep() -> None:
    assert a.saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing
    assert a.saslprep("user") == "user"
    assert a.saslprep("\u00aa") == "a"  # NFKC
    assert a.saslprep("\u2168") == "IX"
    assert a.saslprep("a\u00a0b") == "a b"  # non-ASCII space
    with pytest.raises(ValueError):
        a.saslprep("\u0007")
    with pytest.raises(ValueError):
        a.saslprep("\u0627\u0031")  # RandALCat must start and end


def test_md5_password() -> None:
    # Known value: md5(md5("secret" + "alice") + salt) computed by PostgreSQL's algorithm.
    import hashlib

    inner = hashlib.md5(b"secretalice").hexdigest().encode()
    expected = b"md5" + hashlib.md5(inner + b"\x01\x02\x03\x04").hexdigest().encode()
    assert a.md5_password("alice", "secret", b"\x01\x02\x03\x04") == expected
    assert len(expected) == 35
    assert a.md5_verify("alice", "secret", b"\x01\x02\x03\x04", expected + b"\0")
    assert not a.md5_verify("alice", "wrong", b"\x01\x02\x03\x04", expected)


# -- PostgreSQL itself agrees with make_scram_verifier ---------------------------------------


@pytest.fixture
def _connect(pg_cluster):  # noqa: ANN001, ANN202 - a throw-away cluster's superuser
    psycopg = pytest.importorskip("psycopg")
    return lambda: psycopg.connect(
        f"host={pg_cluster.socket_dir} port={pg_cluster.port} user=postgres dbname=postgres",
        autocommit=True,
    )


@pytest.mark.parametrize("password", ["s3cret-Pa55!", "caf\u00e9 \u2603 I\u00adX", "\u2168"])
def test_verifier_matches_postgresql(password: str, _connect) -> None:
    role = f"wardgate_scram_{secrets.token_hex(4)}"
    with _connect() as conn:
        try:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            quoted = password.replace("'", "''")
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{quoted}'")
            (stored,) = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
        finally:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
    theirs = a.ScramVerifier.parse(stored)
    ours = a.make_scram_verifier(password, iterations=theirs.iterations, salt=theirs.salt)
    assert ours.to_string() == stored
    # and a wrong password gives a different verifier (the check can fail)
    other = a.make_scram_verifier(password + "x", iterations=theirs.iterations, salt=theirs.salt)
    assert other.to_string() != stored
