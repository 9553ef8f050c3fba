"""spec.backup, the schedule decision, the scheduled KVBackup object, and the KVBackup /
KVRestore CRDs (ringkv.operator.backup)."""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringkv.operator.backup import (
    PROGRESS_FIELDS,
    BackupSpecError,
    backup_object,
    human_bytes,
    parse_backup,
    schedule_due,
)

ROOT = Path(__file__).resolve().parents[2]


def ts(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def test_parse_backup_defaults_and_errors() -> None:
    assert parse_backup("c", "ns", None) is None
    spec = parse_backup("c", "ns", {"bucket": "bk", "credentialsSecret": {"name": "s3"},
                                    "schedule": "0 3 * * *"})  # fmt: skip
    assert spec is not None
    assert (spec.prefix, spec.retention, spec.credentials_secret) == ("ns/c", 7, "s3")
    for bad in ({}, {"bucket": ""}, {"bucket": "bk", "schedule": "61 * * * *"},
                {"bucket": "bk", "retention": 0}):  # fmt: skip
        with pytest.raises(BackupSpecError):
            parse_backup("c", "ns", bad or {"x": 1})


def test_schedule_due() -> None:
    spec = parse_backup("c", "ns", {"bucket": "bk", "schedule": "0 3 * * *"})
    created = ts("2026-12-05 01:00")
    assert not schedule_due(spec, None, created, ts("2026-12-05 02:59"))
    assert schedule_due(spec, None, created, ts("2026-12-05 03:00"))
    assert not schedule_due(spec, ts("2026-12-05 03:00"), created, ts("2026-12-06 02:00"))
    assert schedule_due(spec, ts("2026-12-05 03:00"), created, ts("2026-12-06 03:01"))
    unscheduled = parse_backup("c", "ns", {"bucket": "bk"})
    assert not schedule_due(unscheduled, None, created, ts("2027-01-01 00:00"))


def test_scheduled_backup_object_is_owned_by_the_cluster() -> None:
    cluster = {"apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster",
               "metadata": {"name": "prod", "namespace": "db", "uid": "u-1"}}  # fmt: skip
    obj = backup_object(cluster, ts("2026-12-05 03:00"))
    assert obj["kind"] == "KVBackup" and obj["metadata"]["name"] == "prod-202612050300"
    assert obj["spec"] == {"cluster": "prod", "backupId": "202612050300"}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert human_bytes(5 * 1024 * 1024) == "5.0MiB"


def _crds() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "crds" / "kvbackup.yaml").read_text()))


def test_crds_have_phase_size_and_age_columns_and_the_progress_fields() -> None:
    kinds = {}
    for crd in _crds():
        version = crd["spec"]["versions"][0]
        cols = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
        assert cols["Phase"] == ".status.phase" and cols["Size"] == ".status.size"
        assert cols["Age"] == ".metadata.creationTimestamp"
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert set(status["progress"]["properties"]) == set(PROGRESS_FIELDS.values())
        kinds[crd["spec"]["names"]["kind"]] = crd
    assert set(kinds) == {"KVBackup", "KVRestore"}


def test_manifests_carry_the_crds_and_the_rbac() -> None:
    copy = list(yaml.safe_load_all((ROOT / "manifests/operator/crd-backup.yaml").read_text()))
    assert copy == _crds()
    kustomization = yaml.safe_load((ROOT / "manifests/kustomization.yaml").read_text())
    assert "operator/crd-backup.yaml" in kustomization["resources"]
    rbac = list(yaml.safe_load_all((ROOT / "manifests/operator/rbac.yaml").read_text()))
    rules = next(d for d in rbac if d["kind"] == "ClusterRole")["rules"]
    granted = {r for rule in rules for r in rule["resources"]}
    assert {"kvbackups", "kvrestores", "kvbackups/status", "kvrestores/status"} <= granted
    kvc = yaml.safe_load((ROOT / "crds/kvcluster.yaml").read_text())
    spec = kvc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["properties"]["backup"]["properties"]) >= {
        "bucket",
        "prefix",
        "credentialsSecret",
        "schedule",
        "retention",
    }


def test_a_backup_of_a_cluster_with_no_running_node_waits_instead_of_failing() -> None:
    """A schedule that fires while the cluster's pods have no address yet: the KVBackup is
    retried (NotReady: Pending, every 10 s), not Failed with "no endpoint given"."""
    from ringkv.operator.backup import NotReady, Runner

    class Starting(Runner):
        def cluster_access(self, namespace: str, cluster_name: str) -> Any:
            return {"spec": {"backup": {"bucket": "bk"}}}, [], None, False

        def store(self, spec: Any, namespace: str) -> Any:
            raise AssertionError("a backup without nodes must not reach the bucket")

    obj = {"metadata": {"namespace": "db", "name": "prod-1"}, "spec": {"cluster": "prod"}}
    with pytest.raises(NotReady, match="no running node"):
        Starting(kube=None, group="ringkv.io", version="v1alpha1").run_backup(obj, print)
