"""Shared fixtures: real multi-process clusters (see tests/cluster.py).

When a test that used a cluster fails (from these fixtures, or any fixture that gives the
test a `Cluster`), the report gets a "ringkv node logs" section with the last lines of
every node's log.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster

CLUSTERS = pytest.StashKey[list[Cluster]]()

MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeCluster]:
    """Factory: make_cluster(nodes=3, zones=3, replication_factor=3, extra_args=(),
    start=True) returns a Cluster (started and ready unless start=False). Every node of
    every cluster made is killed at teardown."""
    clusters = request.node.stash.setdefault(CLUSTERS, [])

    def make(*, start: bool = True, **kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster.start() if start else cluster

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def cluster3(make_cluster: MakeCluster) -> Cluster:
    """A running 3-node cluster: 3 zones, replication factor 3."""
    return make_cluster(nodes=3, zones=3, replication_factor=3)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        # Clusters from make_cluster/cluster3, and any Cluster another fixture handed the test.
        clusters: list[Cluster] = [*item.stash.get(CLUSTERS, [])]
        funcargs = getattr(item, "funcargs", {})
        clusters += [c for c in funcargs.values() if isinstance(c, Cluster) and c not in clusters]
        for number, cluster in enumerate(clusters):
            report.sections.append((f"ringkv node logs (cluster {number})", cluster.log_tails()))
    return report
