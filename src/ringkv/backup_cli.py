"""``ringkv admin backup``, ``restore``, ``backups`` and ``prune-backups``: the CLI of
``ringkv.backup``.

The bucket is named by ``--bucket`` (or ``$RINGKV_BACKUP_BUCKET``), the prefix by ``--prefix``
and a non-AWS endpoint by ``--s3-endpoint`` (or ``$RINGKV_S3_ENDPOINT``). Credentials come from
the standard places (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``--credentials-file``
or ``AWS_SHARED_CREDENTIALS_FILE``, ``~/.aws/credentials``) and are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_FAILED = 1


def add_commands(admin_command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the backup commands to ``ringkv admin`` (``admin_command`` builds one with the
    connection flags)."""

    def store_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--bucket",
            default=os.environ.get("RINGKV_BACKUP_BUCKET"),
            help="the bucket (default: $RINGKV_BACKUP_BUCKET)",
        )
        sub.add_argument(
            "--prefix",
            default=os.environ.get("RINGKV_BACKUP_PREFIX", "ringkv"),
            help="key prefix of the backups (default: ringkv)",
        )
        sub.add_argument(
            "--s3-endpoint",
            default=os.environ.get("RINGKV_S3_ENDPOINT"),
            help="URL of an S3-compatible store (default: AWS)",
        )
        sub.add_argument("--region", default=None, help="the bucket's region")
        sub.add_argument(
            "--credentials-file",
            default=None,
            help="an AWS-style credentials file (default: the usual places)",
        )

    backup = admin_command("backup", "snapshot every node and upload the snapshots to a bucket")
    store_flags(backup)
    backup.add_argument(
        "--backup-id",
        help="the backup's id (default: the UTC time); rerun "
        "with the same id to resume an interrupted backup",
    )
    backup.add_argument("--cluster", default="ringkv", help="the cluster's name, recorded")
    backup.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="MB_PER_S",
        help="read the snapshots at most this fast (default: unlimited)",
    )
    backup.add_argument(
        "--keep-snapshots", action="store_true", help="keep the node snapshots after the upload"
    )
    backup.set_defaults(handler=cmd_backup)

    restore = admin_command("restore", "write a backup's records into this (running) cluster")
    store_flags(restore)
    restore.add_argument("backup_id", metavar="BACKUP_ID")
    restore.add_argument("--workdir", help="where to download the backup (default: $TMPDIR)")
    restore.set_defaults(handler=cmd_restore)

    listing = admin_command("backups", "list the backups in a bucket")
    store_flags(listing)
    listing.set_defaults(handler=cmd_backups)

    prune = admin_command("prune-backups", "delete all but the newest N complete backups")
    store_flags(prune)
    prune.add_argument("--keep", type=int, required=True, metavar="N")
    prune.set_defaults(handler=cmd_prune)


def store_of(args: argparse.Namespace) -> Any:
    from ringkv.backup import Store

    if not args.bucket:
        raise SystemExit("ringkv: error: --bucket (or $RINGKV_BACKUP_BUCKET) is required")
    if args.credentials_file:
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = args.credentials_file
    return Store(args.bucket, args.prefix, endpoint=args.s3_endpoint, region=args.region)


def _printer(args: argparse.Namespace) -> Callable[[dict[str, Any]], None]:
    from ringkv.cli import format_bytes, format_eta, format_rate

    def show(report: dict[str, Any]) -> None:
        if args.json:
            return
        parts = [
            f"{report['op']} {report['backup_id']}: {report['state']}",
            f"files {report['files_done']}/{report['files_total']}",
            f"bytes {format_bytes(report['bytes_done'])}/{format_bytes(report['bytes_total'])}",
        ]
        if report["op"] == "restore":
            parts.append(f"keys {report['keys_done']}/{report['keys_total'] or '?'}")
            parts.append(f"{report['keys_per_second']:.0f} keys/s")
        else:
            parts.append(
                f"uploaded {format_bytes(report['bytes_uploaded'])}, "
                f"reused {format_bytes(report['bytes_reused'])}"
            )
        parts.append(f"rate {format_rate(report['rate_bytes_per_second'])}")
        parts.append(f"ETA {format_eta(report['eta_seconds'])}")
        print(", ".join(parts), file=sys.stderr, flush=True)

    return show


def _fail(exc: Exception) -> int:
    print(f"ringkv: error: {exc}", file=sys.stderr)
    return EXIT_FAILED


def cmd_backup(args: argparse.Namespace) -> int:
    from ringkv.backup import BackupError, run_backup

    store = store_of(args)
    try:
        manifest = run_backup(
            args.endpoint,
            store,
            backup_id=args.backup_id,
            cluster=args.cluster,
            rate=args.rate * 1e6,
            timeout=max(args.timeout, 30.0),
            keep_snapshots=args.keep_snapshots,
            on_progress=_printer(args),
        )
    except BackupError as exc:
        return _fail(exc)
    summary = {
        k: manifest[k]
        for k in (
            "backup_id",
            "cluster",
            "started_ms",
            "finished_ms",
            "bytes",
            "bytes_uploaded",
            "bytes_reused",
            "files",
        )
    }
    summary["key"] = store.key(manifest["backup_id"])
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ringkv.backup import BackupError, run_restore

    try:
        report = run_restore(
            args.endpoint,
            store_of(args),
            args.backup_id,
            timeout=max(args.timeout, 30.0),
            on_progress=_printer(args),
            workdir=args.workdir,
        )
    except BackupError as exc:
        return _fail(exc)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    store = store_of(args)
    rows = []
    complete = {m["backup_id"]: m for m in store.manifests()}
    for backup_id in store.backup_ids():
        m = complete.get(backup_id)
        rows.append(
            {
                "backup_id": backup_id,
                "complete": m is not None,
                "cluster": m and m.get("cluster"),
                "bytes": m and m.get("bytes"),
                "bytes_uploaded": m and m.get("bytes_uploaded"),
                "started_ms": m and m.get("started_ms"),
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            state = "complete" if r["complete"] else "INCOMPLETE"
            print(f"{r['backup_id']}  {state}  cluster={r['cluster']}  bytes={r['bytes']}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ringkv.backup import prune

    removed = prune(store_of(args), args.keep)
    print(json.dumps({"deleted": removed}))
    return 0
