"""Where a result column really comes from: (table OID, attribute number) -> names.

A RowDescription names, for a column taken straight from a table, that table's OID and
the column's attribute number, whatever alias the statement gave it. Column rules
(`customers.ssn`) must follow the source column, not the alias: `SELECT ssn AS name, name
AS ssn FROM customers` must still mask the first column. This module keeps, per
connection, a map of every user table's columns, read from the target's catalog over the
gateway's own connection, and refreshed when it is older than `MAX_AGE` or when a result
names an OID it does not know.
"""

from __future__ import annotations

import asyncio
import logging
import time

from wardgate.config import ConnectionConfig
from wardgate.engines.postgres import handshake as hs
from wardgate.wire.pg import backend as be
from wardgate.wire.pg import writers as w

__all__ = ["CatalogMap", "CatalogCache", "CATALOG_SQL"]

log = logging.getLogger("wardgate.catalog")

MAX_AGE = 30.0

CATALOG_SQL = (
    "SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname "
    "FROM pg_catalog.pg_attribute a "
    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','v','m','p','f') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%'"
)

# (table oid, attnum) -> (schema, table, column)
CatalogMap = dict[tuple[int, int], tuple[str, str, str]]


async def load_catalog(conn: ConnectionConfig) -> CatalogMap:
    target = await hs.connect_target(conn, {"application_name": "wardgate-catalog"})
    try:
        target.writer.write(w.query(CATALOG_SQL))
        await target.writer.drain()
        out: CatalogMap = {}
        while True:
            t, body, _ = await hs.read_message(target.reader, target.mr)
            if t == ord("D"):
                oid, attnum, schema, table, column = (
                    v.decode() if v is not None else "" for v in be.decode_data_row(body)
                )
                out[(int(oid), int(attnum))] = (schema, table, column)
            elif t == ord("E"):
                raise RuntimeError(be.decode_fields(body).get("M", "catalog query failed"))
            elif t == ord("Z"):
                return out
    finally:
        target.writer.write(w.terminate())
        target.writer.close()


class CatalogCache:
    """One catalog map per connection, loaded at most once per `MAX_AGE` seconds."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[float, CatalogMap]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stale: set[str] = set()

    def get(self, name: str) -> CatalogMap | None:
        entry = self._maps.get(name)
        return entry[1] if entry else None

    def put(self, name: str, catalog: CatalogMap) -> None:
        """Install a map (a fresh object: plans made with the old one are not reused)."""
        self._maps[name] = (time.monotonic(), catalog)
        self._stale.discard(name)

    def mark_stale(self, name: str) -> None:
        self._stale.add(name)

    async def refresh_if_old(self, conn: ConnectionConfig) -> None:
        entry = self._maps.get(conn.name)
        if entry and conn.name not in self._stale and time.monotonic() - entry[0] < MAX_AGE:
            return
        lock = self._locks.setdefault(conn.name, asyncio.Lock())
        async with lock:
            entry = self._maps.get(conn.name)
            if entry and conn.name not in self._stale and time.monotonic() - entry[0] < MAX_AGE:
                return
            try:
                catalog = await load_catalog(conn)
            except Exception as exc:  # keep the old map; unknown OIDs fail closed
                log.warning("could not read the target's catalog: %s", type(exc).__name__)
                return
            self.put(conn.name, catalog)
