"""Parameters sent in binary format (asyncpg sends every one so, psycopg its numbers) are
recorded as their type's text and masked like text: an e-mail bound as binary `text` or a
card number bound as `int8` or `numeric` must not reach the record in an encoded form."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.conftest import RunningGateway
from tests.engines.postgres.test_clients import cli

EMAIL = "jane.doe@example.com"
CARD = 4111111111111111


async def test_binary_parameters_are_recorded_as_masked_text(gateway: RunningGateway) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from wardgate.testing.gateway_process import AGENT_TOKENS

    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=gateway.port,
        user="ci-bot",
        password=AGENT_TOKENS["ci-bot"],
        database="orders",
        ssl=False,
        server_settings={"application_name": "binary-params"},
    )
    try:
        row = await conn.fetchrow(
            "select $1::text, $2::int8, $3::numeric, $4::int4, $5::bool, $6::float8",
            EMAIL,
            CARD,
            Decimal(CARD),
            42,
            True,
            1.5,
        )
        assert row[3] == 42  # the statement ran; the agent's result is masked apart
    finally:
        await conn.close()
    r = cli(gateway, "sessions", "--json")
    session = next(json.loads(s) for s in reversed(r.stdout.splitlines()) if "binary-params" in s)
    replay = cli(gateway, "replay", session["id"], "--json").stdout
    items = [json.loads(line) for line in replay.splitlines()]
    [cmd] = [i for i in items if i["kind"] == "command" and i.get("parameters")]
    email, card_int8, card_numeric, answer, flag, real = cmd["parameters"]
    assert EMAIL not in replay and "jane.doe" not in replay and str(CARD) not in replay
    assert email != EMAIL and "@" not in email.replace("example.com", "")  # masked
    assert card_int8 != str(CARD) and card_numeric != str(CARD)
    for value in (email, card_int8, card_numeric):  # text, not hex or escaped bytes
        assert not value.startswith("\\x") and "\\0" not in value
    assert (answer, flag, real) == ("42", "t", "1.5")  # plain values read as text


def test_psycopg_binary_parameters_with_declared_types(gateway: RunningGateway) -> None:
    import psycopg

    with psycopg.connect(gateway.dsn(), autocommit=True, application_name="psy-binary") as c:
        # %b: binary format; psycopg declares the type in Parse
        c.execute("select %b::int8, %b::text, %b::int4", (CARD, EMAIL, 7))
    r = cli(gateway, "sessions", "--json")
    session = next(json.loads(s) for s in reversed(r.stdout.splitlines()) if "psy-binary" in s)
    replay = cli(gateway, "replay", session["id"], "--json").stdout
    items = [json.loads(line) for line in replay.splitlines()]
    [cmd] = [i for i in items if i["kind"] == "command" and i.get("parameters")]
    card, email, seven = cmd["parameters"]
    assert str(CARD) not in replay and EMAIL not in replay
    assert card != str(CARD) and "\\0" not in card and seven == "7"
