"""Hypothesis strategies shared by the core's property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from ringkv.core.ring import RING_SIZE, Ring

positions = st.integers(min_value=0, max_value=RING_SIZE - 1)


@st.composite
def rings(draw: st.DrawFn, max_nodes: int = 8, max_zones: int = 4, max_vnodes: int = 6) -> Ring:
    """Small rings with random tokens (edge positions 0 and 2**64-1 come up often) and a
    random, possibly lopsided, zone assignment."""
    count = draw(st.integers(min_value=1, max_value=max_nodes))
    zone_count = draw(st.integers(min_value=1, max_value=max_zones))
    names = [f"n{i}" for i in range(count)]
    zones = {name: f"z{draw(st.integers(0, zone_count - 1))}" for name in names}
    per_node = [draw(st.integers(min_value=1, max_value=max_vnodes)) for _ in names]
    flat = draw(st.lists(positions, min_size=sum(per_node), max_size=sum(per_node), unique=True))
    tokens: dict[str, list[int]] = {}
    for name, k in zip(names, per_node, strict=True):
        tokens[name], flat = flat[:k], flat[k:]
    return Ring(tokens, zones)
