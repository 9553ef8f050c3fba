"""Batches: the limits of one batch request, and which node is sent which keys.

A batch keeps every key's own quorum; what it saves is messages. The coordinator works out,
for all keys at once, which replicas to ask (a read) or which node coordinates each key (a
write), and sends each node *one* message holding all of its keys (riak_core's coverage and
Cassandra's batched mutations work the same way), instead of one message per key and replica.

Reads go in rounds: the first asks each key's first R candidates (the coordinator's own copy
first); each later round (after a failure, or the speculative read delay) asks, for the keys
still short of R replies, as many untried candidates as they still need -- again grouped per
node. Pure: candidates, replies and what
was asked are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Most keys one batch request may name (DynamoDB's BatchGetItem also takes 100).
MAX_BATCH_KEYS = 100


class BatchError(ValueError):
    """A batch that cannot be served as a whole; the message is fit for a client."""


def check_keys(keys: Sequence[bytes], max_keys: int = MAX_BATCH_KEYS, unique: bool = False) -> None:
    """Refuse an empty batch, one above ``max_keys``, and (``unique``: writes) a key twice."""
    if not keys:
        raise BatchError("a batch needs at least one key")
    if len(keys) > max_keys:
        raise BatchError(f"a batch takes at most {max_keys} keys; this one has {len(keys)}")
    if unique:
        seen: set[bytes] = set()
        for key in keys:
            if key in seen:
                raise BatchError(f"key {key!r} appears more than once in one write batch")
            seen.add(key)


def group_by_node(assignments: Iterable[tuple[int, Iterable[str]]]) -> dict[str, list[int]]:
    """(item index, nodes for it) pairs -> node -> item indexes, each in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, nodes in assignments:
        for node in nodes:
            groups.setdefault(node, []).append(index)
    return groups


def next_read_round(
    candidates: Sequence[Sequence[str]],
    need: Sequence[int],
    replied: Sequence[int],
    asked: Sequence[set[str]],
) -> dict[str, list[int]]:
    """The next round of a batch read: for every key ``i`` with fewer than ``need[i]``
    replies, its first untried candidates, as many as replies are missing; grouped per node.
    ``asked[i]`` (nodes already asked for key ``i``) is updated. Empty: nothing left to ask."""
    picks: list[tuple[int, list[str]]] = []
    for i, nodes in enumerate(candidates):
        missing = need[i] - replied[i]
        if missing <= 0:
            continue
        chosen = [n for n in nodes if n not in asked[i]][:missing]
        asked[i].update(chosen)
        picks.append((i, chosen))
    return group_by_node(picks)


def coordinators(live: Sequence[Sequence[str]], me: str) -> dict[str, list[int]]:
    """Which node coordinates each key of a write batch: this node when it is one of the
    key's live replicas (no forward needed), else the key's first live replica. Keys without
    a live replica are left out (they are unavailable)."""
    return group_by_node(
        (i, [me if me in nodes else nodes[0]]) for i, nodes in enumerate(live) if nodes
    )
