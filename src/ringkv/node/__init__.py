"""The ringkv storage node: the I/O shell around ``ringkv.core``.

- ``config``: flags and ``RINGKV_*`` environment variables.
- ``storage``: RocksDB (rocksdict) records of sibling versions, plus node metadata.
- ``messaging``: the multiplexed node-to-node protocol (msgpack frames over TCP).
- ``frame_auth``: session keys from the peer handshake and a tag on every later frame.
- ``guards``: clock bounds applied to clients' and peers' clocks; rate-limited log lines.
- ``absence``: records that the node is alive; refuses a rejoin after too long away.
- ``membership``: gossip, heartbeats, the phi accrual detector and the agreed ring.
- ``coordinator``: quorum reads and writes across replicas, forwarding and read repair.
- ``cleanup``: deletes the ranges a node gave away once a ring change is over (after handing
  them off), and keeps late writes for them off this node.
- ``throttle``: paces background work (streaming, anti-entropy, cleanup, listing) to its rate.
- ``metrics``: the node's Prometheus instruments.
- ``observability``: health metrics read at scrape time (membership, RocksDB, disk,
  anti-entropy, hints, TLS) and the event loop's lag and GC pauses.
- ``logs``: the log format (text, or JSON lines with node and request ids).
- ``http``: a small HTTP/1.1 server (asyncio protocol + httptools) with the API's limits.
- ``server``: the node lifecycle and the HTTP API's routes and handlers.
- ``conditional``: conditional writes: a quorum read, the judgement, then the write.
- ``kv_options``: a write's condition and TTL from the request; TTL in read answers.
- ``batch``: batch reads and writes, grouped per peer; ``batch_api``: their HTTP endpoints.
- ``listing``: the key listing scan, one range at a time; ``keys_api``: ``GET /v1/keys``.
- ``snapshots``: RocksDB checkpoints of the node's database; ``snapshot_api``: their
  endpoints and ``POST /v1/admin/restore`` (backed-up records merged into their replicas).
- ``main``: the ``ringkv node`` entry point.
"""
