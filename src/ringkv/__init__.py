"""ringkv: a Dynamo-style distributed key-value store.

- ``ringkv.core``: the pure parts (ring, placement, versions, quorum, gossip, ...); no I/O.
- ``ringkv.node``: the storage node, an asyncio (uvloop) process around the core: its own
  HTTP/1.1 server on httptools, msgpack peer frames, RocksDB storage.
- ``ringkv.operator``: the Kubernetes operator (kopf) for ``KVCluster`` resources.
- ``ringkv.client``: sync and asyncio clients for the HTTP API (two thin transports).
- ``ringkv.client_core``: the clients' sans-I/O core: requests, answers, errors, routing.
- ``ringkv.client_cache``: the clients' opt-in read cache, revalidated with If-None-Match.
- ``ringkv.cli``: the ``ringkv`` command (node, local cluster, keys, batches, status, admin).
- ``ringkv.progress``: how the command shows long operations (bars, rates, ETAs).
- ``ringkv.local``: ``ringkv local up``, a cluster of node processes on loopback.
- ``ringkv.launcher``: starting and stopping node processes (local up, tests, benchmarks).
- ``ringkv.bench``: ``ringkv bench``, the load generator for any running cluster.
- ``ringkv.backup``: cluster backups to S3-compatible storage and restores through the ring;
  ``ringkv.backup_cli``: its ``ringkv admin backup``/``restore`` commands.
- ``ringkv.monitoring``: alerting rules, Grafana dashboards and scrape configurations
  (written to manifests/monitoring/).
- ``ringkv.prometheus``: a Prometheus server beside local nodes (``local up --monitoring``).
"""

__version__ = "0.1.0"
