"""Backups and restores in Kubernetes: ``spec.backup`` on a KVCluster, and the ``KVBackup`` and
``KVRestore`` resources (``ringkv.backup`` does the work; the operator runs it).

- ``spec.backup`` (``BackupSpec``): the bucket, prefix, S3 endpoint and region, the Secret with
  the credentials (keys ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``), an optional
  ``schedule`` (cron syntax, UTC: ``ringkv.core.cron``) and ``retention`` (how many complete
  backups to keep).
- With a schedule, a timer creates a ``KVBackup`` named ``NAME-YYYYMMDDHHMM`` when a scheduled
  minute has passed since the last one (the annotation ``ringkv.io/last-scheduled-backup``).
  The KVBackup is owned by the KVCluster (deleted with it; the backup in the bucket stays).
- ``KVBackup`` ``{cluster}``: the operator backs the cluster up now, with progress in
  ``status.progress``; then ``status.phase`` is ``Succeeded`` (with the size and id) or
  ``Failed`` (with the reason), an Event says so, and after a success the backups beyond
  ``retention`` are pruned (and their KVBackup objects deleted).
- ``KVRestore`` ``{cluster, backupId, source?}``: once the cluster is ready, the operator
  restores the backup into it (``latest``: the newest complete one; ``source``, if given,
  names another bucket/prefix/Secret, e.g. the old cluster's). Same phases and Events.

The credentials are read from the Secret for each run and handed to the S3 client only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ringkv.core.cron import CronError, parse

log = logging.getLogger(__name__)

BACKUP_PLURAL = "kvbackups"
RESTORE_PLURAL = "kvrestores"
LAST_SCHEDULED = "ringkv.io/last-scheduled-backup"
ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
PHASES = ("Pending", "Running", "Succeeded", "Failed")
PROGRESS_EVERY = 2.0  # seconds between status updates while a run goes on
SCHEDULE_INTERVAL = 20.0
#: ringkv.backup's progress report -> status.progress
PROGRESS_FIELDS = {
    "files_done": "filesDone", "files_total": "filesTotal", "bytes_done": "bytesDone",
    "bytes_total": "bytesTotal", "keys_done": "keysDone", "keys_total": "keysTotal",
    "rate_bytes_per_second": "rateBytesPerSecond", "eta_seconds": "etaSeconds",
}  # fmt: skip


class BackupSpecError(ValueError):
    pass


@dataclass(frozen=True)
class BackupSpec:
    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None
    schedule: str | None = None
    retention: int = 7
    rate_mb: float = 0.0


def parse_backup(name: str, namespace: str, raw: dict[str, Any] | None) -> BackupSpec | None:
    """``spec.backup`` (or a KVRestore's ``spec.source``), typed and checked; None if absent."""
    if not raw:
        return None
    bucket = raw.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise BackupSpecError("backup.bucket is required")
    schedule = raw.get("schedule") or None
    if schedule is not None:
        try:
            parse(str(schedule))
        except CronError as exc:
            raise BackupSpecError(f"backup.schedule: {exc}") from None
    retention = int(raw.get("retention", 7))
    if retention < 1:
        raise BackupSpecError("backup.retention must be at least 1")
    return BackupSpec(
        bucket=bucket,
        prefix=str(raw.get("prefix") or f"{namespace}/{name}"),
        endpoint=raw.get("endpoint") or None,
        region=raw.get("region") or None,
        credentials_secret=(raw.get("credentialsSecret") or {}).get("name")
        if isinstance(raw.get("credentialsSecret"), dict)
        else raw.get("credentialsSecret"),
        schedule=str(schedule) if schedule else None,
        retention=retention,
        rate_mb=float(raw.get("rateMBPerSecond", 0) or 0),
    )


def backup_object(cluster: dict[str, Any], when: float) -> dict[str, Any]:
    """The KVBackup a schedule creates at ``when`` (owned by the KVCluster)."""
    meta = cluster["metadata"]
    stamp = time.strftime("%Y%m%d%H%M", time.gmtime(when))
    return {
        "apiVersion": cluster["apiVersion"],
        "kind": "KVBackup",
        "metadata": {
            "name": f"{meta['name']}-{stamp}",
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/instance": meta["name"], "ringkv.io/scheduled": "true"},
            "ownerReferences": [{
                "apiVersion": cluster["apiVersion"], "kind": "KVCluster",
                "name": meta["name"], "uid": meta["uid"],
            }],
        },
        "spec": {"cluster": meta["name"], "backupId": stamp},
    }  # fmt: skip


def schedule_due(spec: BackupSpec | None, last: float | None, created: float, now: float) -> bool:
    """Whether the schedule wants a backup now: a scheduled minute fell after the last
    scheduled backup (or the cluster's creation)."""
    from ringkv.core.cron import due

    if spec is None or spec.schedule is None:
        return False
    return due(spec.schedule, last if last is not None else created, now)


def condition(type_: str, status: bool, reason: str, message: str, now: float) -> dict[str, Any]:
    return {
        "type": type_, "status": "True" if status else "False", "reason": reason,
        "message": message,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }  # fmt: skip


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"  # pragma: no cover


# -- I/O ----------------------------------------------------------------------------------------


@dataclass
class Runner:
    """Runs KVBackups and KVRestores against the Kubernetes API and the nodes."""

    kube: Any  # ringkv.operator.reconciler.KubeApi
    group: str
    version: str
    _custom: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def custom(self) -> Any:
        if self._custom is None:
            from kubernetes import client

            self._custom = client.CustomObjectsApi()
        return self._custom

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                self.group, self.version, namespace, plural, name
            )
            return found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            self.group, self.version, namespace, plural, name, {"status": status}
        )

    def store(self, spec: BackupSpec, namespace: str) -> Any:
        from ringkv.backup import Store
        from ringkv.operator.credentials import secret_value

        access = secret = None
        if spec.credentials_secret:
            found = self.kube.get_secret(namespace, spec.credentials_secret)
            if found is None:
                raise BackupSpecError(f"Secret {spec.credentials_secret} does not exist")
            access = (secret_value(found, ACCESS_KEY) or b"").decode() or None
            secret = (secret_value(found, SECRET_KEY) or b"").decode() or None
        return Store(spec.bucket, spec.prefix, endpoint=spec.endpoint, region=spec.region,
                     access_key=access, secret_key=secret)  # fmt: skip

    def cluster_access(
        self, namespace: str, cluster_name: str
    ) -> tuple[dict[str, Any], list[str], Any, bool]:
        """The KVCluster, its node URLs, the operator's access and whether every node is
        ready."""
        from ringkv.operator import credentials, reconciler
        from ringkv.operator.spec import parse_spec

        cluster = self.get("kvclusters", namespace, cluster_name)
        if cluster is None:
            raise BackupSpecError(f"KVCluster {cluster_name} does not exist")
        spec = parse_spec(cluster_name, namespace, cluster.get("spec") or {})
        _observed, pods = reconciler.observe(spec, self.kube, reconciler.PodsOnly())
        urls = reconciler.endpoints_of(spec, pods.values())
        ready = sum(1 for p in pods.values() if p.ready)
        access = credentials.node_access(spec, self.kube)
        return cluster, urls, access, ready >= spec.replicas and bool(urls)

    def run_backup(self, obj: dict[str, Any], emit: Any) -> dict[str, Any]:
        from ringkv.backup import prune, run_backup

        meta, spec = obj["metadata"], obj.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        cluster, urls, access, _ready = self.cluster_access(ns, spec["cluster"])
        if not urls:  # no pod has an address yet (a schedule that fires as the cluster starts)
            raise NotReady(f"KVCluster {spec['cluster']} has no running node to back up yet")
        bspec = parse_backup(spec["cluster"], ns, (cluster.get("spec") or {}).get("backup"))
        if bspec is None:
            raise BackupSpecError(f"KVCluster {spec['cluster']} has no spec.backup")
        store = self.store(bspec, ns)
        backup_id = spec.get("backupId") or time.strftime("%Y%m%d%H%M%S", time.gmtime())
        started = time.time()
        self._status(BACKUP_PLURAL, ns, name, "Running", started, backupId=backup_id)
        manifest = run_backup(
            ",".join(urls), store, backup_id=backup_id, cluster=spec["cluster"],
            rate=bspec.rate_mb * 1e6, token=access.token, timeout=30.0,
            on_progress=self._progress(BACKUP_PLURAL, ns, name),
        )  # fmt: skip
        status = {
            "backupId": backup_id, "bucket": bspec.bucket,
            "location": store.key(backup_id), "bytes": manifest["bytes"],
            "size": human_bytes(manifest["bytes"]),
            "bytesUploaded": manifest["bytes_uploaded"], "bytesReused": manifest["bytes_reused"],
        }  # fmt: skip
        self._status(BACKUP_PLURAL, ns, name, "Succeeded", started, **status)
        emit("Normal", "BackupSucceeded",
             f"backup {backup_id}: {human_bytes(manifest['bytes'])} "
             f"({human_bytes(manifest['bytes_uploaded'])} uploaded)")  # fmt: skip
        removed = prune(store, bspec.retention)
        if removed:
            emit("Normal", "BackupsPruned", f"deleted backups {', '.join(removed)}")
            self._delete_backup_objects(ns, spec["cluster"], set(removed))
        return status

    def run_restore(self, obj: dict[str, Any], emit: Any) -> dict[str, Any]:
        from ringkv.backup import BackupError, run_restore

        meta, spec = obj["metadata"], obj.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        cluster, urls, access, ready = self.cluster_access(ns, spec["cluster"])
        if not ready:
            raise NotReady(f"KVCluster {spec['cluster']} is not ready yet")
        source = spec.get("source") or (cluster.get("spec") or {}).get("backup")
        bspec = parse_backup(spec["cluster"], ns, source)
        if bspec is None:
            raise BackupSpecError("no spec.source, and the KVCluster has no spec.backup")
        store = self.store(bspec, ns)
        backup_id = spec.get("backupId") or "latest"
        if backup_id == "latest":
            manifests = store.manifests()
            if not manifests:
                raise BackupError(f"no complete backup under {bspec.bucket}/{bspec.prefix}")
            backup_id = manifests[-1]["backup_id"]
        started = time.time()
        self._status(RESTORE_PLURAL, ns, name, "Running", started, backupId=backup_id)
        report = run_restore(
            ",".join(urls), store, backup_id, token=access.token, timeout=30.0,
            on_progress=self._progress(RESTORE_PLURAL, ns, name),
        )  # fmt: skip
        status = {"backupId": backup_id, "bytes": report["bytes_total"],
                  "size": human_bytes(report["bytes_total"]),
                  "records": report["records_sent"]}  # fmt: skip
        self._status(RESTORE_PLURAL, ns, name, "Succeeded", started, **status)
        emit("Normal", "RestoreSucceeded",
             f"restored backup {backup_id}: {report['records_sent']} records")  # fmt: skip
        return status

    def _status(self, plural: str, ns: str, name: str, phase: str, started: float,
                **extra: Any) -> None:  # fmt: skip
        now = time.time()
        done = phase in ("Succeeded", "Failed")
        status: dict[str, Any] = {
            "phase": phase,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "conditions": [condition("Complete", phase == "Succeeded", phase,
                                     extra.get("message", phase), now)],
            **extra,
        }  # fmt: skip
        if done:
            status["finishedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.patch_status(plural, ns, name, status)

    def _progress(self, plural: str, ns: str, name: str) -> Any:
        last = [0.0]

        def report(progress: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY and progress.get("state") == "running":
                return
            last[0] = now
            try:
                self.patch_status(plural, ns, name, {"progress": {
                    camel: progress[k] for k, camel in PROGRESS_FIELDS.items()
                    if progress.get(k) is not None
                }})  # fmt: skip
            except Exception as exc:  # progress is best effort
                log.warning("progress of %s/%s: %s", ns, name, exc)

        return report

    def _delete_backup_objects(self, ns: str, cluster: str, backup_ids: set[str]) -> None:
        listed = self.custom.list_namespaced_custom_object(
            self.group, self.version, ns, BACKUP_PLURAL,
            label_selector=f"app.kubernetes.io/instance={cluster}",
        )  # fmt: skip
        for item in listed.get("items", []):
            if (item.get("status") or {}).get("backupId") in backup_ids:
                self.custom.delete_namespaced_custom_object(
                    self.group, self.version, ns, BACKUP_PLURAL, item["metadata"]["name"]
                )

    def schedule(self, cluster: dict[str, Any], now: float, emit: Any) -> str | None:
        """Create the scheduled KVBackup if one is due; returns its name."""
        meta = cluster["metadata"]
        bspec = parse_backup(meta["name"], meta["namespace"],
                             (cluster.get("spec") or {}).get("backup"))  # fmt: skip
        annotations = meta.get("annotations") or {}
        last = float(annotations[LAST_SCHEDULED]) if LAST_SCHEDULED in annotations else None
        created = _parse_time(meta.get("creationTimestamp")) or now
        if not schedule_due(bspec, last, created, now):
            return None
        obj = backup_object(cluster, now)
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(
                self.group, self.version, meta["namespace"], BACKUP_PLURAL, obj
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: this minute's backup exists already
                raise
        self.custom.patch_namespaced_custom_object(
            self.group, self.version, meta["namespace"], "kvclusters", meta["name"],
            {"metadata": {"annotations": {LAST_SCHEDULED: str(int(now))}}},
        )  # fmt: skip
        emit("Normal", "BackupScheduled", f"created KVBackup {obj['metadata']['name']}")
        return str(obj["metadata"]["name"])


class NotReady(Exception):
    """The target cluster is not ready: the restore waits and tries again."""


def _parse_time(text: str | None) -> float | None:
    import calendar

    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
