"""The ringkv storage node: the I/O shell around ``ringkv.core``.

Wiring and settings:
- ``node``: ``Node`` builds and owns the parts below, runs their loops, answers peer messages
  through one verb table, and owns the HTTP API; ``Node.serve`` runs it until SIGTERM.
- ``config``: flags and ``RINGKV_*`` environment variables.
- ``main`` (and ``__main__``): the ``ringkv node`` entry point.
- ``shards``: ``--shards S``: the supervisor of S worker processes (one per core), the shard
  ports, the membership view shard 0 shares with the others, and the hand-over of a client
  request to the shard that owns its key.
- ``shard_channel``: the local channel between the shards of a node (a Unix socket each) over
  which a client request is handed to the shard that owns its key, answered with its bytes.

Parts:
- ``storage``: RocksDB (rocksdict) records of sibling versions, plus node metadata.
- ``disk_guard``: a full disk: not ready, flagged in gossip so coordinators write elsewhere
  (hints), and the recovery (reopening RocksDB after an ENOSPC) once space returns.
- ``messaging``: the multiplexed node-to-node protocol (msgpack frames over TCP).
- ``frame_auth``: session keys from the peer handshake and a tag on every later frame.
- ``auth``: API tokens and their roles; the cluster secret.
- ``tls``: certificates for the client and peer ports, reloaded when they change.
- ``guards``: clock bounds applied to clients' and peers' clocks; rate-limited log lines.
- ``absence``: records that the node is alive; refuses a rejoin after too long away.
- ``membership``: gossip, heartbeats, the phi accrual detector and the agreed ring.
- ``coordinator``: quorum reads and writes across replicas, forwarding and read repair.
- ``conditional``: conditional writes: a quorum read, the judgement, then the write.
- ``hints``: hinted handoff: writes kept for a replica that was down, delivered later.
- ``anti_entropy``: Merkle-tree comparison with the other replicas of each range, and repair.
- ``streaming``: ring changes (join, decommission, replace, remove): streaming the ranges
  that move, and their progress.
- ``cleanup``: deletes the ranges a node gave away once a ring change is over (after handing
  them off), and keeps late writes for them off this node.
- ``batch``: batch reads and writes, grouped per peer.
- ``listing``: the key listing scan, one range at a time.
- ``snapshots``: RocksDB checkpoints of the node's database.
- ``parts``: what the coordinator, anti-entropy, ring changes and cleanup are built on.
- ``throttle``: paces background work (streaming, anti-entropy, cleanup, listing) to its rate.
- ``metrics``: the node's Prometheus instruments.
- ``observability``: health metrics read at scrape time (membership, RocksDB, disk,
  anti-entropy, hints, TLS) and the event loop's lag and GC pauses.
- ``logs``: the log format (text, or JSON lines with node and request ids).

The HTTP API:
- ``http``: a small HTTP/1.1 server (asyncio protocol + httptools) with the API's limits.
- ``server``: ``Api``, the routes and what wraps every handler (auth, overload limit, errors).
- ``api_errors``: ``ApiError`` and the translation of failures into JSON error answers.
- ``kv_api``: ``GET``/``PUT``/``DELETE /v1/kv/{key}`` and the request parts every data
  endpoint shares (key, quorum parameters, context, request metrics).
- ``kv_options``: a write's condition and TTL from the request; TTL in read answers.
- ``batch_api``: ``POST /v1/batch/{get,put,delete}``.
- ``keys_api``: ``GET /v1/keys``.
- ``status_api``: the probes, ``/v1/status``, ``/v1/ring``, anti-entropy trees, ``/metrics``.
- ``admin_api``: ring changes, their plan and progress, and cleanup under ``/v1/admin/``.
- ``snapshot_api``: snapshots (``/v1/admin/snapshot``, ``/v1/admin/snapshots``) and
  ``POST /v1/admin/restore`` (backed-up records merged into their replicas).
"""
