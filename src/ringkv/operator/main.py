"""``python -m ringkv.operator`` (and ``ringkv operator``): run kopf with the handlers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringkv operator",
        description="Run the ringkv Kubernetes operator (KVCluster resources, ringkv.io/v1alpha1).",
    )
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces, "
        "or $RINGKV_OPERATOR_NAMESPACES, comma separated)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between reconcile passes per KVCluster (default 5, "
        "or $RINGKV_OPERATOR_INTERVAL)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus metrics port, 0 for none (default 9090, or $RINGKV_OPERATOR_METRICS_PORT)",
    )
    p.add_argument(
        "--liveness",
        default=os.environ.get("RINGKV_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf liveness endpoint URL ('' for none; default http://0.0.0.0:8080/healthz)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The handlers module reads these when it is imported: set them first.
    if args.interval is not None:
        os.environ["RINGKV_OPERATOR_INTERVAL"] = str(args.interval)
    if args.metrics_port is not None:
        os.environ["RINGKV_OPERATOR_METRICS_PORT"] = str(args.metrics_port)
    namespaces = list(args.namespace) or [
        n.strip() for n in os.environ.get("RINGKV_OPERATOR_NAMESPACES", "").split(",") if n.strip()
    ]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import kopf

    import ringkv.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,  # one replica (the Deployment uses Recreate): no peering objects
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0
