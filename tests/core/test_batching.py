"""ringkv.core.batching: batch limits, read rounds and write coordinators, grouped per node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.batching import (
    MAX_BATCH_KEYS,
    BatchError,
    check_keys,
    coordinators,
    group_by_node,
    next_read_round,
)

NODES = ["n1", "n2", "n3", "n4", "n5"]


def test_limits() -> None:
    check_keys([b"a"])
    check_keys([b"k%d" % i for i in range(MAX_BATCH_KEYS)])
    with pytest.raises(BatchError, match="at least one"):
        check_keys([])
    with pytest.raises(BatchError, match="at most 100"):
        check_keys([b"k%d" % i for i in range(MAX_BATCH_KEYS + 1)])
    check_keys([b"a", b"a"])  # a read may name a key twice
    with pytest.raises(BatchError, match="more than once"):
        check_keys([b"a", b"b", b"a"], unique=True)


def test_one_message_per_node_for_many_keys() -> None:
    candidates = [["n1", "n2", "n3"]] * 100
    asked: list[set[str]] = [set() for _ in candidates]
    plan = next_read_round(candidates, [2] * 100, [0] * 100, asked)
    assert plan == {"n1": list(range(100)), "n2": list(range(100))}  # 2 messages, not 200


def test_read_rounds_ask_the_spares_of_the_keys_still_short() -> None:
    candidates = [["n1", "n2", "n3"], ["n2", "n3", "n4"], ["n1", "n4", "n5"]]
    asked: list[set[str]] = [set() for _ in candidates]
    first = next_read_round(candidates, [2, 2, 2], [0, 0, 0], asked)
    assert first == {"n1": [0, 2], "n2": [0, 1], "n3": [1], "n4": [2]}
    # n2 failed: keys 0 and 1 are short of one reply; key 2 is complete
    second = next_read_round(candidates, [2, 2, 2], [1, 1, 2], asked)
    assert second == {"n3": [0], "n4": [1]}
    # nothing left to try for key 0 once n3 fails as well
    assert next_read_round(candidates, [2, 2, 2], [1, 2, 2], asked) == {}


def test_write_coordinators() -> None:
    live = [["n2", "n1", "n3"], ["n2", "n3", "n4"], ["n4", "n5", "n1"], []]
    assert coordinators(live, "n1") == {"n1": [0, 2], "n2": [1]}


@given(
    st.lists(
        st.tuples(st.permutations(NODES).map(lambda p: p[:3]), st.integers(1, 3)),
        min_size=1,
        max_size=30,
    ),
    st.sets(st.sampled_from(NODES)),
)
def test_read_rounds_property(keys: list[tuple[list[str], int]], failing: set[str]) -> None:
    """Rounds until nothing is left: every node gets one message per round, no key asks a node
    twice, and a key ends with R replies exactly when R of its candidates work."""
    candidates = [nodes for nodes, _ in keys]
    need = [r for _, r in keys]
    replied = [0] * len(keys)
    asked: list[set[str]] = [set() for _ in keys]
    asks = [0] * len(keys)
    for _ in range(10):
        plan = next_read_round(candidates, need, replied, asked)
        if not plan:
            break
        for node, indexes in plan.items():
            assert len(indexes) == len(set(indexes))  # one message holds each key once
            for i in indexes:
                asks[i] += 1
                if node not in failing:
                    replied[i] += 1
    else:
        raise AssertionError("rounds did not end")
    for i, (nodes, r) in enumerate(keys):
        working = sum(1 for n in nodes if n not in failing)
        assert replied[i] == min(r, working)
        assert asks[i] == len(asked[i]) <= len(nodes)


def test_group_by_node_keeps_order() -> None:
    assert group_by_node([(0, ["b", "a"]), (1, ["a"]), (2, [])]) == {"b": [0], "a": [0, 1]}
