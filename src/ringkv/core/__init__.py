"""The pure core of ringkv: no sockets, no disk, no clock reads (time is always an argument).

- ``ring``: the 64-bit consistent-hash ring with virtual nodes and ownership.
- ``placement``: the zone-aware preference list of replicas for a key (riak_core's ``get_apl``).
- ``allocation``: which tokens a joining node takes, balancing zone-aware replica load.
- ``versions``: vector clocks, dotted versions, sibling sets, tombstones and hybrid logical clocks.
- ``validators``: the ETag of a version set and the If-None-Match rules of reads.
- ``quorum``: r/w levels, consistency presets and their validation.
- ``round``: the quorum round of one request (riak_core's get/put FSM): targets, required
  count, tally, speculative reads, outcome, read repair; fed events and time.
- ``errors``: the one table of request failures (code, HTTP status, retryable, fields) and the
  peer, HTTP and client translations derived from it.
- ``failure_detector``: the phi accrual failure detector, fed heartbeat arrival times.
- ``gossip``: versioned endpoint states and the digest exchange that spreads membership.
- ``merkle``: hash trees over token ranges, updated incrementally, compared by anti-entropy.
- ``streaming``: which ranges move from where to where when the ring changes.
- ``expiry``: TTL rules: when a version stops being live, when it may be purged.
- ``conditions``: conditional writes (If-None-Match / If-Match) judged against a read.
- ``batching``: batch limits; which node is sent which keys (one message per node).
- ``listing``: key listing in ring order: the ring's pieces, cursors, merging replicas.
- ``cleanup``: when a node may delete the ranges it gave away, and which.
- ``clock_bounds``: how far ahead of the wall clock a clock from a client or peer may be.
- ``json_input``: the one depth-limited parser for JSON from outside.
- ``absence``: whether a node was away too long to rejoin with its data.
- ``cron``: cron schedules (scheduled backups): the next scheduled minute after a time.
- ``token_bucket``: how long background work waits to keep to its rate.
- ``sharding``: which shard of a node holds a token (fixed equal slices), arcs cut at them.
"""
