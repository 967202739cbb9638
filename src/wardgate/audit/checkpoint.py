"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, and the Checkpointer.

Theory of operation: a checkpoint body is three lines, `<origin>\\n<size>\\n<base64 root>\\n`.
A signed note is the body, a blank line, and one or more signature lines
`— <key name> <base64(4-byte key id || Ed25519 signature of the body)>\\n` (U+2014 em
dash). The `Checkpointer` signs the tree head at most every `interval` seconds when there
are new events, and once more at close. The whole step runs as one job on the store's
writer thread, so no append can slip in between reading the tree and recording the
checkpoint: it reads the last stored checkpoint, checks that note's signature with the
keyring's own public keys, proves the current tree consistent with it from the stored
nodes, and only then signs and inserts. If any check fails it raises `CheckpointError`
and signs nothing: it never signs two inconsistent tree heads. After commit, the note is
appended (and fsynced) to the publish file, if one is configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from wardgate.audit.group_commit import utc_now
from wardgate.audit.keys import Keyring, KeyringError, PublicKey, load_keyring
from wardgate.audit.merkle import MerkleFrontier, ProofError, check_consistency, consistency_proof
from wardgate.audit.store import AuditStore, _ConnNodeReader

_log = logging.getLogger("wardgate.checkpoint")

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "NoteSignature",
    "SignedCheckpoint",
    "checkpoint_body",
    "parse_checkpoint",
    "sign_note",
    "parse_note",
    "verify_note",
    "read_published",
    "stored_checkpoints",
    "Checkpointer",
]

EM_DASH = "\u2014"


class CheckpointError(Exception):
    """A checkpoint is malformed, unsigned, or inconsistent with the log."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str  # the full signed note text
    created: str  # when it was signed (store time)


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin:
        raise CheckpointError("checkpoint origin must be one non-empty line")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise CheckpointError("checkpoint body must be origin, size, root lines")
    origin, size_s, root_s, *ext = lines[:-1]
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
        raise CheckpointError(f"bad checkpoint size {size_s!r}")
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError as exc:
        raise CheckpointError("bad checkpoint root") from exc
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not 32 bytes")
    return Checkpoint(origin, int(size_s), root, tuple(ext))


def sign_note(body: str, keyring: Keyring) -> str:
    kid, sig = keyring.sign(body.encode())
    return f"{body}\n{EM_DASH} {keyring.name} {base64.b64encode(kid + sig).decode()}\n"


def parse_note(text: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into (body, signatures)."""
    head, sep, sigs = text.rpartition("\n\n")
    if not sep or not text.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before signatures)")
    out = []
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise CheckpointError(f"bad signature line {line!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError as exc:
            raise CheckpointError("bad signature encoding") from exc
        if len(raw) < 5:
            raise CheckpointError("signature too short")
        out.append(NoteSignature(parts[1], raw[:4], raw[4:]))
    return head + "\n", out


def verify_note(text: str, keys: list[PublicKey], *, at: str | None = None) -> Checkpoint:
    """Parse and verify: some signature must be by a known key (valid at `at`, if given)."""
    body, sigs = parse_note(text)
    cp = parse_checkpoint(body)
    for sig in sigs:
        for key in keys:
            if key.name != sig.name or key.key_id != sig.key_id:
                continue
            if at is not None and key.not_before and not key.valid_at(at):
                continue
            if key.verify(body.encode(), sig.signature):
                return cp
    raise CheckpointError("signature invalid")


def read_published(path: Path) -> list[str]:
    """Signed notes from a publish file (each note followed by one empty line), or the
    checkpoints of an evidence bundle (a zip): one an auditor received earlier holds
    checkpoints the log must still agree with. Raises ValueError (a zip that is not a
    bundle, text that is not UTF-8) or OSError; each note is verified by the caller."""
    raw = Path(path).read_bytes()
    if raw.startswith(b"PK\x03\x04"):
        return _bundle_notes(raw)
    notes: list[str] = []
    cur: list[str] = []
    in_sigs = False
    for line in raw.decode("utf-8").split("\n"):
        if line:
            cur.append(line)
        elif cur and not in_sigs:
            cur.append(line)
            in_sigs = True
        elif cur:
            notes.append("\n".join(cur) + "\n")
            cur, in_sigs = [], False
    if cur:  # a truncated last note: returned as is, so that verifying it fails
        notes.append("\n".join(cur) + "\n")
    return notes


def _bundle_notes(raw: bytes) -> list[str]:
    from wardgate.audit.bundle_zip import read_zip  # stdlib only; imported when needed

    members = {m.name: m.data for m in read_zip(raw)}
    if "checkpoints.json" not in members:
        raise ValueError("a zip without checkpoints.json is not an evidence bundle")
    doc = json.loads(members["checkpoints.json"])
    if not isinstance(doc, list) or not all(
        isinstance(c, dict) and isinstance(c.get("note"), str) for c in doc
    ):
        raise ValueError("checkpoints.json of the bundle is not a list of signed notes")
    return [c["note"] for c in doc]


def stored_checkpoints(conn: sqlite3.Connection) -> list[tuple[int, bytes, str, str]]:
    """(size, root, note, created) rows of the checkpoints table, by size."""
    return [
        (s, bytes(r), n, c)
        for s, r, n, c in conn.execute(
            "SELECT size, root, note, created FROM checkpoints ORDER BY size"
        )
    ]


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Checkpointer:
    """Signs consistent tree heads of one store; see the module docstring."""

    def __init__(
        self,
        store: AuditStore,
        keyring: Keyring,
        origin: str,
        *,
        interval: float = 10.0,
        publish: Path | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self._key_file_state = _file_state(keyring.path)
        self.origin = origin
        self.interval = interval
        self.publish = Path(publish) if publish is not None else None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event = asyncio.Event()

    # -- one checkpoint ----------------------------------------------------------------
    def _current_keyring(self) -> Keyring:
        """The keyring, reloaded when its file changed (`wardgate keys rotate` on a running
        gateway takes effect at the next checkpoint, no restart).

        A changed file is taken only if it still holds every public key this gateway knew
        (a rotation retires the active key, it does not drop it); a file replaced by an
        unrelated key, or one that does not load, is refused and logged, and signing goes
        on with the keys in memory: evidence signed before must stay verifiable.
        """
        state = _file_state(self.keyring.path)
        if state == self._key_file_state:
            return self.keyring
        self._key_file_state = state
        try:
            fresh = load_keyring(self.keyring.path)
        except KeyringError as exc:
            _log.error(
                "key file changed but cannot be loaded (%s); signing with the loaded key", exc
            )
            return self.keyring
        known = {k.public for k in fresh.public_keys()}
        missing = [k for k in self.keyring.public_keys() if k.public not in known]
        if missing or fresh.name != self.keyring.name:
            _log.error(
                "key file %s no longer holds the key(s) %s (replaced, not rotated); refusing it "
                "and signing with the loaded key",
                self.keyring.path,
                ", ".join(k.key_id.hex() for k in missing) or f"named {self.keyring.name!r}",
            )
            return self.keyring
        if fresh.active.public != self.keyring.active.public:
            _log.info("key file rotated: signing with key %s from now", fresh.active.key_id.hex())
        self.keyring = fresh
        return fresh

    def _job(self, conn: sqlite3.Connection, frontier: MerkleFrontier) -> SignedCheckpoint | None:
        self._current_keyring()
        size, root = frontier.size, frontier.root()
        last = conn.execute(
            "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        if last is not None:
            last_size, last_note = last
            try:
                prev = verify_note(last_note, self.keyring.public_keys())
            except CheckpointError as exc:
                raise CheckpointError(
                    f"last checkpoint (size {last_size}) unverifiable: {exc}"
                ) from exc
            if prev.size != last_size or prev.origin != self.origin:
                raise CheckpointError("last checkpoint row does not match its note")
            if size == last_size:
                if root != prev.root:
                    raise CheckpointError(f"tree at size {size} differs from its checkpoint")
                return None
            try:
                proof = consistency_proof(_ConnNodeReader(conn), last_size, size)
                check_consistency(last_size, size, proof, prev.root, root)
            except ProofError as exc:
                raise CheckpointError(
                    f"tree of size {size} is not consistent with checkpoint at size "
                    f"{last_size}: {exc}; refusing to sign"
                ) from exc
        elif size == 0:
            return None
        note = sign_note(checkpoint_body(self.origin, size, root), self.keyring)
        created = utc_now()
        conn.execute(
            "INSERT INTO checkpoints(size, root, note, created) VALUES (?,?,?,?)",
            (size, root, note, created),
        )
        return SignedCheckpoint(Checkpoint(self.origin, size, root), note, created)

    def _publish(self, signed: SignedCheckpoint | None) -> None:
        if signed is None or self.publish is None:
            return
        self.publish.parent.mkdir(parents=True, exist_ok=True)
        with open(self.publish, "a", encoding="utf-8") as f:
            f.write(signed.note + "\n")
            f.flush()
            os.fsync(f.fileno())

    def checkpoint_now(self) -> SignedCheckpoint | None:
        """Sign the current tree head if it grew; None if nothing new. Blocking."""
        signed = self.store.transact(self._job).result()
        self._publish(signed)
        return signed

    async def acheckpoint(self) -> SignedCheckpoint | None:
        signed = await asyncio.wrap_future(self.store.transact(self._job))
        await asyncio.to_thread(self._publish, signed)
        return signed

    # -- the periodic loop ----------------------------------------------------------------
    async def run(self) -> None:
        """Checkpoint every `interval` seconds while there are new events, until `aclose`.

        The loop is stopped between checkpoints, never cancelled inside one: a checkpoint
        signed and stored but not yet appended to the publish file would otherwise be lost
        from the published record. A failing checkpoint (store unavailable) is logged and
        retried at the next interval.
        """
        stop = self._stop
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass
            if stop.is_set():
                return
            try:
                await self.acheckpoint()
            except CheckpointError:
                raise
            except Exception:  # noqa: BLE001 - keep signing once the store is back
                _log.exception("periodic checkpoint failed; retrying at the next interval")

    def start(self) -> asyncio.Task[None]:
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self.run(), name="wardgate-checkpointer"
        )
        return self._task

    async def aclose(self) -> SignedCheckpoint | None:
        """Stop the loop and sign a final checkpoint (call before closing the store)."""
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(asyncio.CancelledError, CheckpointError):
                await self._task
            self._task = None
        return await self.acheckpoint()

    def close(self) -> SignedCheckpoint | None:
        """Synchronous final checkpoint (no loop running)."""
        return self.checkpoint_now()
