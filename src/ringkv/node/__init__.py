"""The ringkv storage node: the I/O shell around ``ringkv.core``.

- ``config``: flags and ``RINGKV_*`` environment variables.
- ``storage``: RocksDB (rocksdict) records of sibling versions, plus node metadata.
- ``messaging``: the multiplexed node-to-node protocol (msgpack frames over TCP).
- ``membership``: gossip, heartbeats, the phi accrual detector and the agreed ring.
- ``coordinator``: quorum reads and writes across replicas, forwarding and read repair.
- ``metrics``: the node's Prometheus instruments.
- ``observability``: health metrics read at scrape time (membership, RocksDB, disk,
  anti-entropy, hints, TLS) and the event loop's lag and GC pauses.
- ``logs``: the log format (text, or JSON lines with node and request ids).
- ``http``: a small HTTP/1.1 server (asyncio protocol + httptools) with the API's limits.
- ``server``: the node lifecycle and the HTTP API's routes and handlers.
- ``main``: the ``ringkv node`` entry point.
"""
