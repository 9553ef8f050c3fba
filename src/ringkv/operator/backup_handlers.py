"""kopf handlers of backups (``ringkv.operator.backup``): the schedule timer on KVClusters, and
the KVBackup and KVRestore resources, each run once (a Failed one stays failed: create a new
one to try again; a KVRestore waits, retrying, until its cluster is ready, and a KVBackup while
no node of its cluster is running)."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import kopf

from ringkv.operator.backup import (
    BACKUP_PLURAL,
    RESTORE_PLURAL,
    SCHEDULE_INTERVAL,
    BackupSpecError,
    NotReady,
    Runner,
)
from ringkv.operator.spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
_runner: list[Runner] = []


def runner() -> Runner:
    if not _runner:
        from ringkv.operator.handlers import kube

        _runner.append(Runner(kube(), GROUP, VERSION))
    return _runner[0]


def _emit(body: Any) -> Any:
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    return emit


@kopf.timer(GROUP, VERSION, PLURAL, interval=SCHEDULE_INTERVAL, initial_delay=5.0, sharp=False,
            id="backup-schedule")  # fmt: skip
def backup_schedule(body: kopf.Body, **_: Any) -> None:
    plain = copy.deepcopy(dict(body))
    if not (plain.get("spec") or {}).get("backup"):
        return
    try:
        runner().schedule(plain, time.time(), _emit(body))
    except BackupSpecError as exc:
        kopf.warn(body, reason="BackupSpecInvalid", message=str(exc))


def _run(kind: str, body: kopf.Body, work: Any) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    plural = BACKUP_PLURAL if kind == "backup" else RESTORE_PLURAL
    phase = (body.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return  # ran already (an operator restart must not run it twice)
    started = time.time()
    try:
        work(copy.deepcopy(dict(body)), _emit(body))
    except NotReady as exc:
        runner()._status(plural, ns, name, "Pending", started, message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=10) from None
    except Exception as exc:
        log.exception("%s %s/%s failed", kind, ns, name)
        message = f"{type(exc).__name__}: {exc}"
        runner()._status(plural, ns, name, "Failed", started, message=message)
        kopf.warn(body, reason=f"{kind.title()}Failed", message=message)


@kopf.on.create(GROUP, VERSION, BACKUP_PLURAL)
@kopf.on.resume(GROUP, VERSION, BACKUP_PLURAL)
def run_backup(body: kopf.Body, **_: Any) -> None:
    _run("backup", body, runner().run_backup)


@kopf.on.create(GROUP, VERSION, RESTORE_PLURAL, retries=360)
@kopf.on.resume(GROUP, VERSION, RESTORE_PLURAL, retries=360)
def run_restore(body: kopf.Body, **_: Any) -> None:
    _run("restore", body, runner().run_restore)
