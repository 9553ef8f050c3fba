"""Fixtures of the disruption scenarios (issue 23): those of the operator suite.

``e2e/conftest.py`` (``k8s``, ``namespace``, ``--cluster``) applies here as everywhere under
``e2e/``. The operator in-cluster from ``manifests/`` and the example KVCluster settled at 3
nodes (``operator``, ``cluster_ns``, ``available``) and the helpers (``Workload``, ``settled``,
``fill``, ...) are ``e2e/operator/test_operator_e2e.py``'s, imported from there so that both
suites set the cluster up the same way; each test module here gets its own cluster
(module-scoped fixtures).

No ``__init__.py`` here, as in ``e2e/operator``.
"""

from __future__ import annotations

import sys
from pathlib import Path

OPERATOR_SUITE = Path(__file__).resolve().parents[1] / "operator"
if str(OPERATOR_SUITE) not in sys.path:
    sys.path.insert(0, str(OPERATOR_SUITE))

from test_operator_e2e import available, cluster_ns, operator  # noqa: E402,F401
from test_operator_lifecycle_e2e import spare_node  # noqa: E402,F401
