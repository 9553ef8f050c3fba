"""The ringkv storage node: the I/O shell around ``ringkv.core``.

- ``config``: flags and ``RINGKV_*`` environment variables.
- ``storage``: RocksDB (rocksdict) records of sibling versions, plus node metadata.
- ``messaging``: the multiplexed node-to-node protocol (msgpack frames over TCP).
- ``frame_auth``: session keys from the peer handshake and a tag on every later frame.
- ``guards``: clock bounds applied to clients' and peers' clocks; rate-limited log lines.
- ``absence``: records that the node is alive; refuses a rejoin after too long away.
- ``membership``: gossip, heartbeats, the phi accrual detector and the agreed ring.
- ``coordinator``: quorum reads and writes across replicas, forwarding and read repair.
- ``metrics``: the node's Prometheus instruments.
- ``http``: a small HTTP/1.1 server (asyncio protocol + httptools) with the API's limits.
- ``server``: the node lifecycle and the HTTP API's routes and handlers.
- ``main``: the ``ringkv node`` entry point.
"""
