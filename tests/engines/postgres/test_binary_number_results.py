"""A card number kept in a bigint or numeric column is masked in binary results too.

In text format the value is its digits and the baseline finds the card (the value is
sent as NULL); in binary format an int8 is 8 bytes and a numeric base-10000 digit
groups, so before the fix no recognizer saw a digit: asyncpg (which reads both in
binary) and psycopg's binary cursors got the card number."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import psycopg

from tests.conftest import RunningGateway
from wardgate.testing.gateway_process import AGENT_TOKENS

CARD = 4111111111111111


def _table(gateway: RunningGateway) -> None:
    gateway.cluster.psql(
        "orders",
        "drop table if exists bn_cards; create table bn_cards (id int, pan bigint, "
        "pan_n numeric, amount numeric(12, 2), n bigint); grant select on bn_cards to app; "
        f"insert into bn_cards values (1, {CARD}, {CARD}, 1234.50, 42)",
    )


def test_psycopg_binary_cursor(gateway: RunningGateway) -> None:
    _table(gateway)
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                row = cur.execute("SELECT pan, pan_n, amount, n FROM bn_cards").fetchone()
            assert row is not None and row[0] is None and row[1] is None, (binary, row)
            assert str(row[2]) == "1234.50" and row[3] == 42  # other numbers pass


def test_asyncpg(gateway: RunningGateway) -> None:
    _table(gateway)

    async def fetch() -> Any:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.port,
            user="ci-bot",
            password=AGENT_TOKENS["ci-bot"],
            database="orders",
            ssl=False,
        )
        try:
            return await conn.fetchrow("SELECT pan, pan_n, amount, n FROM bn_cards")
        finally:
            await conn.close()

    row = asyncio.run(fetch())
    assert row["pan"] is None and row["pan_n"] is None, row
    assert str(row["amount"]) == "1234.50" and row["n"] == 42
