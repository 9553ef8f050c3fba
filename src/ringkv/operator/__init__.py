"""The ringkv Kubernetes operator: ``KVCluster`` resources (group ``ringkv.io``, ``v1alpha1``).

- ``spec``: the KVCluster spec as a typed, defaulted value, and the names and labels of
  everything derived from it.
- ``builders``: pure functions that build every child object (a StatefulSet per zone, the peer
  and client Services, the zones' PodDisruptionBudgets, the nodes' ServiceAccount, Role
  and RoleBinding) as plain dicts.
- ``credentials``: the Secrets the operator generates (API tokens, the cluster secret), and
  the operator's own access to the nodes (its bearer token, the TLS CA).
- ``plan``: pure reconcile decisions -- from the spec, the observed StatefulSets, pods, volumes
  and ring, and the time, the next single action and the status with its conditions; the
  decision is the first verdict of an ordered list of small rules (``plan.RULES``).
- ``reconciler``: one reconcile pass -- fetch the observed state from Kubernetes and the nodes,
  apply the children, carry out the action ``plan`` chose, write the status.
- ``handlers``: the kopf handlers (create/resume/update apply the children; a timer runs the
  reconcile pass), Kubernetes Events and Prometheus metrics.
- ``backup``: ``spec.backup``, scheduled backups, the ``KVBackup`` and ``KVRestore`` runs;
  ``backup_handlers``: their kopf handlers.
- ``metrics``: per-KVCluster metrics (phase, last actions, failed passes).
- ``main``: ``python -m ringkv.operator`` runs kopf with the handlers.
"""
