"""ringkv: a Dynamo-style distributed key-value store.

- ``ringkv.core``: the pure parts (ring, placement, versions, quorum); no I/O.
- ``ringkv.node``: the storage node, an aiohttp server around the core with RocksDB storage.
- ``ringkv.client``: sync and asyncio clients for the HTTP API.
- ``ringkv.client_cache``: the clients' opt-in read cache, revalidated with If-None-Match.
- ``ringkv.cli``: the ``ringkv`` command (node, local cluster, put/get/delete/status).
- ``ringkv.backup``: cluster backups to S3-compatible storage and restores through the ring;
  ``ringkv.backup_cli``: its ``ringkv admin backup``/``restore`` commands.
- ``ringkv.operator``: the Kubernetes operator (a later issue).
- ``ringkv.monitoring``: alerting rules, Grafana dashboards and scrape configurations
  (written to manifests/monitoring/).
"""

__version__ = "0.1.0"
