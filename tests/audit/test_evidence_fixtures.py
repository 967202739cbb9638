"""A store of real-looking gateway events with checkpoints, for the evidence tests."""

from __future__ import annotations

import json
from pathlib import Path

from wardgate.audit.checkpoint import Checkpointer
from wardgate.audit.keys import Keyring, init_keyring, rotate_keyring
from wardgate.audit.store import AuditStore

ORIGIN = "wardgate.test/evidence"


def _cmd(text: str) -> bytes:
    return json.dumps({"text": text, "parameters": []}).encode()


def build_store(tmp: Path, *, rotate: bool = True) -> tuple[AuditStore, Keyring]:
    """Two identities on two connections, allowed/denied/held statements, masking, rotation."""
    key_file = tmp / "cp.key"
    ring = init_keyring(key_file, ORIGIN)
    store = AuditStore.open(f"sqlite:///{tmp}/audit.db")
    cp = Checkpointer(store, ring, ORIGIN)
    a = store.append_sync
    for n, (ident, conn) in enumerate([("ci-deployer", "prod"), ("assistant", "analytics"),
                                       ("ci-deployer", "analytics")]):  # fmt: skip
        sess = f"s{n}"
        a("session_start", session=sess, identity=ident, connection=conn,
          meta={"client_addr": f"10.0.0.{n}", "application_name": "psql", "protocol": "pg",
                "tls": True, "database": "app"})  # fmt: skip
        for i in range(4):
            c = a("command", session=sess, identity=ident, connection=conn, verdict="allow",
                  rule="read-only", payload=_cmd(f"SELECT email FROM users LIMIT {i}"),
                  meta={"index": i, "via": "simple", "kinds": ["select"],
                        "objects": ["public.users"], "reason": "read", "fingerprint": "f"})  # fmt: skip
            a("result", session=sess, identity=ident, connection=conn,
              payload=b'{"email":"<EMAIL_ADDRESS>"}\n',
              meta={"command_seq": c.seq, "tag": "SELECT 1", "rows": 1, "error": None,
                    "stored_rows": 1, "truncated": False, "total_bytes": 30, "digest": "00",
                    "masking": {"email": {"EMAIL_ADDRESS": 1}, "rule": "pii"}})  # fmt: skip
            if i == 1:
                cp.checkpoint_now()
        a("command", session=sess, identity=ident, connection=conn, verdict="deny",
          rule="no-ddl", payload=_cmd("DROP TABLE users"),
          meta={"index": 5, "kinds": ["drop"], "objects": ["public.users"],
                "reason": "DDL is not allowed"})  # fmt: skip
        if n == 1 and rotate:
            ring = rotate_keyring(key_file)
            cp.keyring = ring
        a("command", session=sess, identity=ident, connection=conn, verdict="review",
          rule="hold-deletes", payload=_cmd("DELETE FROM orders WHERE id = 1"),
          meta={"index": 6, "kinds": ["delete"], "objects": ["public.orders"],
                "reason": "deletes need approval", "approval_id": f"ap{n}"})  # fmt: skip
        a("approval_requested", session=sess, identity=ident, connection=conn, verdict="review",
          rule="hold-deletes", meta={"approval_id": f"ap{n}", "statement": "DELETE FROM orders",
                                     "reason": "deletes need approval"})  # fmt: skip
        a("approval_decided", session=sess, identity=ident, connection=conn,
          meta={"approval_id": f"ap{n}", "reviewer": "alice", "decision": "approve",
                "reason": "ticket OPS-12", "time": "2026-11-26T10:00:00.000000Z"})  # fmt: skip
        a("session_end", session=sess, identity=ident, connection=conn,
          meta={"statements": 6, "reason": "client closed"})  # fmt: skip
        cp.checkpoint_now()
    a("auth_failure", identity="mallory", connection="prod",
      meta={"client_addr": "10.9.9.9", "reason": "bad token", "protocol": "pg",
            "sqlstate": "28P01"})  # fmt: skip
    cp.checkpoint_now()
    return store, ring
