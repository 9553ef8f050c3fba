"""spec.shards: worker processes per node, its default from the pod's CPU, its range, how it
reaches the nodes (RINGKV_SHARDS), `kubectl get kvc` and the roll a change causes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringkv.node.config import SETTINGS, parse_args
from ringkv.operator import builders
from ringkv.operator.plan import NONE, RESTART, decide
from ringkv.operator.spec import (
    MAX_SHARDS,
    MIN_SHARDS,
    SHARDS_ENV,
    SHARDS_FLAG,
    SpecError,
    default_shards,
)

from .conftest import ZONES, cluster, make_spec

ROOT = Path(__file__).resolve().parents[2]
ONE = {z: 1 for z in ZONES}


def crd_version(path: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / path).read_text())
    version: dict[str, Any] = doc["spec"]["versions"][0]
    return version


def node_env(spec: Any, zone: str) -> dict[str, str]:
    [container] = builders.build_pod_template(spec, zone)["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


# -- the default --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "shards"),
    [
        ({"limits": {"cpu": "4"}}, 4),
        ({"limits": {"cpu": 2}}, 2),  # an integer quantity
        ({"limits": {"cpu": "2500m"}}, 3),  # rounded up: the third core is partly ours
        ({"limits": {"cpu": "3000m"}}, 3),  # exactly 3, not a float hair above it
        ({"limits": {"cpu": "7000m"}}, 7),
        ({"limits": {"cpu": "1.5"}}, 2),
        ({"limits": {"cpu": "500m"}}, 1),
        ({"limits": {"cpu": "100m", "memory": "1Gi"}}, 1),
        ({"limits": {"cpu": "2"}, "requests": {"cpu": "8"}}, 2),  # the limit wins
        ({"limits": {"memory": "1Gi"}, "requests": {"cpu": "3"}}, 3),  # no limit: the request
        ({"requests": {"cpu": "100m"}}, 1),
        ({"limits": {"memory": "1Gi"}}, 1),  # no CPU named at all: one process, as before
        ({}, 1),
        ({"limits": {"cpu": "0"}, "requests": {"cpu": "2"}}, 2),
        ({"limits": {"cpu": str(MAX_SHARDS * 4)}}, MAX_SHARDS),  # clamped to the range
    ],
)
def test_default_is_the_pods_cpu(resources: dict[str, Any], shards: int) -> None:
    assert default_shards(resources) == shards
    spec = make_spec(resources=resources) if resources else make_spec()
    assert spec.shards == shards
    assert node_env(spec, ZONES[0])[SHARDS_ENV] == str(shards)


def test_an_explicit_count_wins_over_the_cpu_limit() -> None:
    spec = make_spec(shards=2, resources={"limits": {"cpu": "8"}})
    assert spec.shards == 2
    assert node_env(spec, ZONES[1])[SHARDS_ENV] == "2"


@pytest.mark.parametrize("bad", [0, -1, MAX_SHARDS + 1, "2", 2.0, True])
def test_out_of_range_or_not_a_whole_number_is_refused(bad: Any) -> None:
    with pytest.raises(SpecError, match=r"spec\.shards must be"):
        make_spec(shards=bad)


def test_the_range_ends_are_accepted() -> None:
    assert make_spec(shards=MIN_SHARDS).shards == MIN_SHARDS
    assert make_spec(shards=MAX_SHARDS).shards == MAX_SHARDS


def test_settings_cannot_set_the_shard_count() -> None:
    """spec.shards sets it; a second way through spec.settings could contradict it."""
    with pytest.raises(SpecError, match="must not set shards"):
        make_spec(settings={"shards": "4"})


# -- the CRD ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["crds/kvcluster.yaml", "manifests/operator/crd.yaml"])
def test_crd_field_and_column(path: str) -> None:
    version = crd_version(path)
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field = spec["properties"]["shards"]
    assert field["type"] == "integer"
    assert (field["minimum"], field["maximum"]) == (MIN_SHARDS, MAX_SHARDS)
    # no static default: it depends on the pod's resources, so the operator applies it
    assert "default" not in field
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert cols["Shards"]["jsonPath"] == ".status.shards"
    assert cols["Shards"]["type"] == "integer"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["shards"]["type"] == "integer"
    rule = spec["properties"]["settings"]["x-kubernetes-validations"][0]["rule"]
    assert "'shards'" in rule


def test_range_is_the_nodes_once_the_node_declares_the_flag() -> None:
    """One range: the node's --shards upper bound when the node has the flag (its variable is
    the one the operator writes, and every count the operator may write is one the node takes);
    the operator's own until then."""
    node = SETTINGS.get(SHARDS_FLAG)
    assert node is None or (
        node.env == SHARDS_ENV
        and node.high == MAX_SHARDS
        and node.problem(MIN_SHARDS) is None
        and node.problem(MAX_SHARDS) is None
    ), node


def test_docs_state_the_field_and_its_range() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    row = re.search(r"^\| `shards` \|([^|]*)\|([^|]*)\|$", text, re.M)
    assert row is not None, "docs/operations.md's spec table has no shards row"
    assert f"{MIN_SHARDS}..{MAX_SHARDS}" in row.group(2)
    assert "SHARDS" in text  # the printer column in the sample `kubectl get kvc`


# -- the nodes ----------------------------------------------------------------------------------


def test_the_node_accepts_the_operators_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node pod's whole environment, RINGKV_SHARDS included, is a valid node configuration:
    a node that predates --shards ignores the variable, one that has it takes the count."""
    import os

    spec = make_spec(shards=2)
    [container] = builders.build_pod_template(spec, ZONES[0])["spec"]["containers"]
    pod = {"POD_NAME": spec.pod_name(ZONES[0], 0), "POD_NAMESPACE": "ns", "POD_IP": "10.0.0.7"}
    for name in list(os.environ):
        if name.startswith("RINGKV_"):
            monkeypatch.delenv(name)
    for e in container["env"]:
        if "value" in e:
            value = re.sub(r"\$\((\w+)\)", lambda m: pod[m.group(1)], e["value"])
            monkeypatch.setenv(e["name"], value)
    assert os.environ[SHARDS_ENV] == "2"
    config = parse_args([])
    assert config.node_id == "kv-zone-a-0" and config.vnodes == spec.vnodes
    if SHARDS_FLAG in SETTINGS:
        assert getattr(config, SHARDS_FLAG) == 2


# -- status and the roll ------------------------------------------------------------------------


def test_status_reports_the_count_for_the_column() -> None:
    spec = make_spec(resources={"limits": {"cpu": "2"}})
    status = decide(spec, cluster(spec, ONE), {}, 1000.0, 2).status
    assert status["shards"] == 2


def test_a_change_is_a_pod_template_change_of_that_variable_only() -> None:
    """The StatefulSets update OnDelete, so a new template is what makes the operator roll."""
    before = make_spec(resources={"limits": {"cpu": "2"}})
    after = make_spec(resources={"limits": {"cpu": "2"}}, shards=1)
    for zone in ZONES:
        old = builders.build_statefulset(before, zone, 1)
        new = builders.build_statefulset(after, zone, 1)
        assert old["spec"]["updateStrategy"] == {"type": "OnDelete"}
        assert old != new
        [c_old] = old["spec"]["template"]["spec"]["containers"]
        [c_new] = new["spec"]["template"]["spec"]["containers"]
        changed = {e["name"] for e in c_old["env"]} ^ {e["name"] for e in c_new["env"]} | {
            a["name"] for a, b in zip(c_old["env"], c_new["env"], strict=True) if a != b
        }
        assert changed == {SHARDS_ENV}
        c_new["env"] = c_old["env"]
        assert old == new  # nothing else differs
    # a limit change that keeps the count changes the resources, not the shard variable
    same = make_spec(resources={"limits": {"cpu": "1500m"}})
    assert node_env(same, ZONES[0])[SHARDS_ENV] == node_env(before, ZONES[0])[SHARDS_ENV]


def test_a_change_rolls_the_pods_one_at_a_time() -> None:
    """After a shard-count change every pod is on the old revision: one pod restarted per
    step, the next only once the restarted one is back and ready."""
    spec = make_spec(shards=2)
    old = {f"kv-{z}-0": "rev0" for z in ZONES}
    d = decide(spec, cluster(spec, ONE, revisions=old), {}, 1000.0, 2)
    assert d.action.kind == RESTART and d.action.node in old
    assert d.status["phase"] == "Upgrading" and d.status["updatedReplicas"] == 0
    node = d.action.node
    assert node is not None
    # that pod is down: no second restart meanwhile
    down = cluster(spec, ONE, revisions=old, dead={node}, no_pod={node})
    d2 = decide(spec, down, d.status, 1005.0, 2)
    assert d2.action.kind == NONE
    del old[node]
    # back on the new template but not ready: still waiting
    d3 = decide(spec, cluster(spec, ONE, revisions=old, not_ready={node}), d2.status, 1010.0, 2)
    assert d3.action.kind == NONE
    d4 = decide(spec, cluster(spec, ONE, revisions=old), d3.status, 1015.0, 2)
    assert d4.action.kind == RESTART and d4.action.node in old
    assert d4.status["updatedReplicas"] == 1
