"""RFC 6962 / RFC 9162 Merkle tree: roots, proofs and both verifiers, over hashlib.

Theory of operation: a node is addressed as `(level, idx)`, the *complete* subtree of
2**level leaves starting at leaf `idx << level`. Only complete subtrees are ever stored;
an incomplete subtree (on the right edge of a tree of size n) is the right fold of the
complete subtrees its range decomposes into, so the hash of any range the RFC recursion
asks for costs at most log2(n) node reads. A proof is produced in two steps: plan the
ranges it needs (pure arithmetic on sizes), then read every complete node those ranges
decompose into in one batch from a `NodeReader` (the SQLite store, or `MemoryTree`), then
fold. `MerkleFrontier` is the compact right edge an appender keeps in memory: appending a
leaf yields the new complete nodes to persist (amortised two per leaf) and the root of the
current tree is a fold of at most log2(n) hashes.

The verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 and are checked against the
transparency-dev test vectors (tests/audit/test_merkle_vectors.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from wardgate.audit.canonical import EMPTY_ROOT, node_hash

__all__ = [
    "NodeKey",
    "NodeReader",
    "ProofError",
    "MemoryTree",
    "MerkleFrontier",
    "range_nodes",
    "root_from_leaves",
    "root_at",
    "inclusion_proof",
    "consistency_proof",
    "check_inclusion",
    "check_consistency",
    "verify_inclusion",
    "verify_consistency",
]

NodeKey = tuple[int, int]  # (level, idx)
_HASH_LEN = 32


class ProofError(ValueError):
    """A proof does not verify (the message says why), or cannot be produced."""


class NodeReader(Protocol):
    """Anything that can hand out stored complete-subtree hashes in a batch."""

    def get_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]: ...


def _largest_pow2_below(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[NodeKey]:
    """Complete aligned subtrees covering leaves [start, end), left to right."""
    out: list[NodeKey] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length()
        while (1 << level) > end - start:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of left-to-right subtree hashes: the RFC hash of their whole range."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _hash_ranges(reader: NodeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    keys = [range_nodes(a, b) for a, b in ranges]
    wanted = sorted({k for ks in keys for k in ks})
    got = reader.get_nodes(wanted)
    missing = [k for k in wanted if k not in got]
    if missing:
        raise ProofError(f"tree nodes missing from store: {missing[:5]}")
    return [_fold([got[k] for k in ks]) for ks in keys]


def root_at(reader: NodeReader, size: int) -> bytes:
    """Root hash of the tree made of the first `size` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges(reader, [(0, size)])[0]


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form PATH(index, D[0:size]) (RFC 9162 2.1.3.1), leaf first."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def _consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form PROOF(m, D[0:n]) (RFC 9162 2.1.4.1), bottom first."""
    out: list[tuple[int, int]] = []
    lo, hi, complete = 0, n, True
    while True:
        if m == hi - lo:
            if not complete:
                out.append((lo, hi))
            break
        k = _largest_pow2_below(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            m -= k
            lo = lo + k
            complete = False
    out.reverse()
    return out


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """Audit path for leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} not in tree of size {size}")
    return _hash_ranges(reader, _inclusion_ranges(index, size))


def consistency_proof(reader: NodeReader, size1: int, size2: int) -> list[bytes]:
    """Proof that the tree of `size1` leaves is a prefix of the tree of `size2`."""
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to {size2}")
    if size1 == 0 or size1 == size2:
        return []
    return _hash_ranges(reader, _consistency_ranges(size1, size2))


def check_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` under `root`."""
    if index < 0 or index >= size:
        raise ProofError(f"index {index} out of range for size {size}")
    if len(leaf) != _HASH_LEN or len(root) != _HASH_LEN:
        raise ProofError("leaf hash and root must be 32-byte SHA-256 values")
    if any(len(p) != _HASH_LEN for p in proof):
        raise ProofError("proof element is not a 32-byte SHA-256 value")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof too short")
    if r != root:
        raise ProofError("root does not match")


def check_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise ProofError unless `proof` shows tree (size1, root1) is a prefix of (size2, root2).

    As in the reference vectors, a proof from the empty tree is refused: it proves nothing
    (callers treat "no earlier checkpoint" separately).
    """
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) < size1 ({size1})")
    if size1 == 0:
        raise ProofError("consistency with the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("sizes equal but proof not empty")
        if root1 != root2:
            raise ProofError("sizes equal but roots differ")
        return
    if not proof:
        raise ProofError("empty proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof too short")
    if fr != root1:
        raise ProofError("first root does not match")
    if sr != root2:
        raise ProofError("second root does not match")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff the inclusion proof verifies."""
    try:
        check_inclusion(leaf, index, size, proof, root)
    except ProofError:
        return False
    return True


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """True iff the consistency proof verifies."""
    try:
        check_consistency(size1, size2, proof, root1, root2)
    except ProofError:
        return False
    return True


class MerkleFrontier:
    """The right edge of an append-only tree: one hash per set bit of its size."""

    __slots__ = ("size", "_stack")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != size.bit_count():
            raise ValueError("frontier needs one hash per set bit of size")
        self.size = size
        self._stack = list(stack)

    @classmethod
    def load(cls, reader: NodeReader, size: int) -> MerkleFrontier:
        keys = range_nodes(0, size)
        got = reader.get_nodes(keys)
        if any(k not in got for k in keys):
            raise ProofError(f"tree nodes missing for frontier at size {size}")
        return cls(size, [got[k] for k in keys])

    def copy(self) -> MerkleFrontier:
        return MerkleFrontier(self.size, self._stack)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the complete nodes it creates as (level, idx, hash)."""
        idx, level, h = self.size, 0, leaf
        created = [(0, idx, h)]
        while idx & 1:
            h = node_hash(self._stack.pop(), h)
            idx >>= 1
            level += 1
            created.append((level, idx, h))
        self._stack.append(h)
        self.size += 1
        return created

    def append_flat(self, leaf: bytes, out: list) -> None:
        """`append`, but the interior nodes created go to `out` flat: level, idx, hash, ...

        (The writer's hot loop: no tuple or list per leaf.)
        """
        idx, level, h, stack = self.size, 0, leaf, self._stack
        while idx & 1:
            h = node_hash(stack.pop(), h)
            idx >>= 1
            level += 1
            out += (level, idx, h)
        stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        return _fold(self._stack) if self._stack else EMPTY_ROOT


class MemoryTree:
    """All complete nodes of a tree held in memory (verify, bundles, tests)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf: bytes) -> None:
        self._levels[0].append(leaf)
        level = 0
        while len(self._levels[level]) % 2 == 0:
            row = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(row[-2], row[-1]))
            level += 1

    def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        out: dict[NodeKey, bytes] = {}
        for level, idx in keys:
            if level < len(self._levels) and idx < len(self._levels[level]):
                out[(level, idx)] = self._levels[level][idx]
        return out

    def root(self, size: int | None = None) -> bytes:
        return root_at(self, self.size if size is None else size)


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes (pairwise, an odd last node moves up unchanged)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
