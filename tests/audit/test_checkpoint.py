"""Checkpoints: signed-note format, the Checkpointer, never signing inconsistent heads."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from wardgate.audit.checkpoint import (
    EM_DASH,
    Checkpointer,
    CheckpointError,
    checkpoint_body,
    parse_checkpoint,
    parse_note,
    read_published,
    verify_note,
)
from wardgate.audit.keys import init_keyring, load_keyring, rotate_keyring
from wardgate.audit.store import AuditStore

ORIGIN = "wardgate.test/log"


@pytest.fixture
def env(tmp_path: Path):
    store = AuditStore.open(tmp_path / "log.db")
    ring = init_keyring(tmp_path / "cp.key", ORIGIN)
    cp = Checkpointer(store, ring, ORIGIN, interval=0.05, publish=tmp_path / "published.txt")
    yield store, ring, cp, tmp_path
    store.close()


def test_note_format(env) -> None:
    store, ring, cp, tmp = env
    for i in range(5):
        store.append_sync("e", meta={"i": i})
    signed = cp.checkpoint_now()
    assert signed is not None and signed.checkpoint.size == 5
    body, sigs = parse_note(signed.note)
    assert body == checkpoint_body(ORIGIN, 5, store.root())
    lines = signed.note.split("\n")
    assert lines[0] == ORIGIN and lines[1] == "5" and lines[3] == ""
    assert lines[4].startswith(f"{EM_DASH} {ORIGIN} ") and lines[5] == ""
    assert sigs[0].key_id == ring.active.key_id
    assert verify_note(signed.note, ring.public_keys()).root == store.root()
    tampered = signed.note.replace("\n5\n", "\n6\n")
    with pytest.raises(CheckpointError, match="signature invalid"):
        verify_note(tampered, ring.public_keys())
    with pytest.raises(CheckpointError):
        parse_checkpoint("origin\n05\nAAAA\n")


def test_only_new_events_get_checkpoints_and_published(env) -> None:
    store, ring, cp, tmp = env
    assert cp.checkpoint_now() is None  # empty log: nothing to sign
    store.append_sync("a")
    assert cp.checkpoint_now().checkpoint.size == 1
    assert cp.checkpoint_now() is None  # nothing new
    store.append_sync("b")
    store.append_sync("c")
    assert cp.checkpoint_now().checkpoint.size == 3
    notes = read_published(tmp / "published.txt")
    assert [verify_note(n, ring.public_keys()).size for n in notes] == [1, 3]


async def test_periodic_loop_and_final_checkpoint(env) -> None:
    store, ring, cp, tmp = env
    cp.start()
    await store.append("a")
    await asyncio.sleep(0.2)
    await store.append("b")
    final = await cp.aclose()
    sizes = [verify_note(n, ring.public_keys()).size for n in read_published(tmp / "published.txt")]
    assert sizes[0] == 1 and sizes[-1] == 2
    assert final is None or final.checkpoint.size == 2


def test_refuses_to_sign_after_tree_rewrite(env) -> None:
    store, ring, cp, tmp = env
    for i in range(8):
        store.append_sync("e", meta={"i": i})
    cp.checkpoint_now()
    store.append_sync("more")
    # someone rewrites history under the checkpoint: a leaf hash changes
    store.transact(
        lambda conn, _f: conn.execute("UPDATE events SET leaf = zeroblob(32) WHERE seq = 3")
    ).result()
    store.close()  # the gateway restarts on the rewritten store
    store = AuditStore.open(tmp / "log.db")
    cp.store = store
    try:
        with pytest.raises(CheckpointError, match="not consistent|refusing"):
            cp.checkpoint_now()
    finally:
        store.close()
    assert len(read_published(tmp / "published.txt")) == 1


def test_refuses_to_sign_after_tile_rewrite(env) -> None:
    store, ring, cp, tmp = env
    for i in range(300):
        store.submit("e", meta={"i": i})
    store.append_sync("last")
    cp.checkpoint_now()
    store.append_sync("more")

    # the root of the first (complete, stored) tile changes: node (level 8, idx 0)
    def rewrite_tile_root(conn, _f) -> None:
        (blob,) = conn.execute("SELECT hashes FROM tiles WHERE level = 0 AND idx = 0").fetchone()
        conn.execute(
            "UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 0", (blob[:-32] + b"\x11" * 32,)
        )

    store.transact(rewrite_tile_root).result()
    store.close()
    store = AuditStore.open(tmp / "log.db")
    cp.store = store
    try:
        with pytest.raises(CheckpointError, match="not consistent|refusing"):
            cp.checkpoint_now()
    finally:
        store.close()
    assert len(read_published(tmp / "published.txt")) == 1


def test_refuses_when_last_checkpoint_forged(env) -> None:
    store, ring, cp, tmp = env
    store.append_sync("a")
    cp.checkpoint_now()
    store.append_sync("b")
    store.transact(
        lambda conn, _f: conn.execute("UPDATE checkpoints SET note = replace(note, '—', '-')")
    ).result()
    with pytest.raises(CheckpointError, match="unverifiable"):
        cp.checkpoint_now()


def test_rotation_old_checkpoints_still_verify(env) -> None:
    store, ring, cp, tmp = env
    store.append_sync("a")
    old = cp.checkpoint_now()
    cp.keyring = rotate_keyring(ring.path)
    store.append_sync("b")
    new = cp.checkpoint_now()  # checks the old note with the retired key, signs with the new
    keys = load_keyring(ring.path).public_keys()
    assert verify_note(old.note, keys, at=old.created).size == 1
    assert verify_note(new.note, keys, at=new.created).size == 2
    assert parse_note(old.note)[1][0].key_id != parse_note(new.note)[1][0].key_id
    with pytest.raises(CheckpointError):  # the old note was not signed by the new key
        verify_note(old.note, keys[-1:])


def test_rotation_on_a_running_checkpointer_needs_no_restart(env, caplog) -> None:
    store, ring, cp, tmp = env
    caplog.set_level(logging.INFO, "wardgate.checkpoint")
    store.append_sync("a")
    old = cp.checkpoint_now()
    rotate_keyring(ring.path)  # what `wardgate keys rotate` does from another process
    store.append_sync("b")
    new = cp.checkpoint_now()
    keys = load_keyring(ring.path).public_keys()
    assert parse_note(new.note)[1][0].key_id == keys[-1].key_id  # the new key signed
    assert parse_note(old.note)[1][0].key_id == keys[0].key_id
    assert verify_note(new.note, keys, at=new.created).size == 2
    assert "rotated" in caplog.text


def test_a_replaced_key_file_is_refused_and_signing_goes_on(env, caplog) -> None:
    store, ring, cp, tmp = env
    store.append_sync("a")
    first = cp.checkpoint_now()
    init_keyring(ring.path, ORIGIN, force=True)  # an unrelated key: old evidence unverifiable
    store.append_sync("b")
    second = cp.checkpoint_now()
    assert parse_note(second.note)[1][0].key_id == parse_note(first.note)[1][0].key_id
    assert verify_note(second.note, ring.public_keys()).size == 2
    assert "replaced, not rotated" in caplog.text
    (tmp / "cp.key").write_text("{not json")  # a broken file: same, logged, kept signing
    (tmp / "cp.key").chmod(0o600)
    store.append_sync("c")
    third = cp.checkpoint_now()
    assert verify_note(third.note, ring.public_keys()).size == 3
    assert "cannot be loaded" in caplog.text
