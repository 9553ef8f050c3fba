"""The pure core of ringkv: no sockets, no disk, no clock reads (time is always an argument).

- ``ring``: the 64-bit consistent-hash ring with virtual nodes, token allocation and ownership.
- ``placement``: the zone-aware preference list of replicas for a key (riak_core's ``get_apl``).
- ``versions``: vector clocks, dotted versions, sibling sets, tombstones and hybrid logical clocks.
- ``quorum``: r/w levels, consistency presets and their validation.
- ``failure_detector``: the phi accrual failure detector, fed heartbeat arrival times.
- ``gossip``: versioned endpoint states and the digest exchange that spreads membership.
- ``merkle``: hash trees over token ranges, updated incrementally, compared by anti-entropy.
- ``streaming``: which ranges move from where to where when the ring changes.
- ``clock_bounds``: how far ahead of the wall clock a clock from a client or peer may be.
- ``json_input``: the one depth-limited parser for JSON from outside.
- ``absence``: whether a node was away too long to rejoin with its data.
"""
