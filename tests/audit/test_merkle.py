"""Proof generation against the RFC 9162 recursive definitions, and round trips."""

from __future__ import annotations

import hashlib

import pytest

from wardgate.audit.canonical import EMPTY_ROOT, leaf_hash, node_hash
from wardgate.audit.merkle import (
    MemoryTree,
    MerkleFrontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    range_nodes,
    root_at,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


LEAVES = [leaf_hash(str(i).encode()) for i in range(70)]


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    return MemoryTree(LEAVES)


def test_roots_all_sizes(tree: MemoryTree) -> None:
    frontier = MerkleFrontier()
    assert frontier.root() == EMPTY_ROOT
    for n in range(0, 71):
        want = mth(LEAVES[:n])
        assert root_from_leaves(LEAVES[:n]) == want
        assert root_at(tree, n) == want
        assert frontier.root() == want
        if n < 70:
            frontier.append(LEAVES[n])


def test_frontier_reload(tree: MemoryTree) -> None:
    for n in (0, 1, 5, 64, 69):
        f = MerkleFrontier.load(tree, n)
        assert f.root() == mth(LEAVES[:n])
        f.append(LEAVES[n])
        assert f.root() == mth(LEAVES[: n + 1])


def test_frontier_creates_exactly_the_complete_nodes() -> None:
    f = MerkleFrontier()
    created = [c for leaf in LEAVES[:16] for c in f.append(leaf)]
    assert [(lv, i) for lv, i, _ in created].count((4, 0)) == 1
    assert len(created) == 31  # 16 + 8 + 4 + 2 + 1


def test_inclusion_matches_rfc(tree: MemoryTree) -> None:
    for n in range(1, 40):
        root = mth(LEAVES[:n])
        for m in range(n):
            proof = inclusion_proof(tree, m, n)
            assert proof == path(m, LEAVES[:n])
            assert verify_inclusion(LEAVES[m], m, n, proof, root)
            assert not verify_inclusion(LEAVES[m], (m + 1) % n, n, proof, root) or n == 1
            assert not verify_inclusion(LEAVES[(m + 1) % 70], m, n, proof, root)


def test_consistency_matches_rfc(tree: MemoryTree) -> None:
    for n in range(1, 40):
        for m in range(1, n + 1):
            proof = consistency_proof(tree, m, n)
            assert proof == subproof(m, LEAVES[:n], True)
            r1, r2 = mth(LEAVES[:m]), mth(LEAVES[:n])
            assert verify_consistency(m, n, proof, r1, r2)
            if m < n:
                assert not verify_consistency(m, n, proof, mth(LEAVES[1 : m + 1]), r2)
                assert not verify_consistency(m, n, proof, r1, mth(LEAVES[1 : n + 1]))


def test_range_nodes_cover_exactly() -> None:
    for a, b in [(0, 1), (0, 7), (8, 13), (0, 70), (64, 70)]:
        nodes = range_nodes(a, b)
        covered = [x for lv, i in nodes for x in range(i << lv, (i + 1) << lv)]
        assert covered == list(range(a, b))


def test_bad_requests_raise(tree: MemoryTree) -> None:
    with pytest.raises(ProofError):
        inclusion_proof(tree, 5, 5)
    with pytest.raises(ProofError):
        consistency_proof(tree, 6, 5)
    with pytest.raises(ProofError):
        root_at(tree, 71)  # nodes beyond the tree are missing
