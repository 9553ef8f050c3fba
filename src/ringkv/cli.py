"""The `ringkv` command: run a node, run a local cluster, and read or write keys."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from ringkv import __version__
from ringkv.client import BadRequest, Client, ConnectionFailed, RingkvError, Timeout, Unavailable

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SIBLINGS = 4
EXIT_OTHER = 5

EPILOG = """\
exit codes:
  0  success
  1  key not found (get)
  2  usage error or bad request (HTTP 400, 413, 414)
  3  not enough replicas (HTTP 503), replicas timed out (HTTP 504) or no endpoint reachable
  4  get returned siblings (only with --fail-on-siblings)
  5  any other error answered by a node (for example HTTP 500)

examples:
  ringkv local up
  ringkv put hello world --endpoint http://127.0.0.1:7001
  echo -n world | ringkv put hello -
  ringkv get hello --consistency strong
  ringkv delete hello --w all
  ringkv status
"""

DEFAULT_ENDPOINT = "http://127.0.0.1:7001"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command == "node":
            return run_node(extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except RingkvError as exc:
        return report_error(exc)
    except ValueError as exc:  # a malformed --endpoint
        print(f"ringkv: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringkv",
        description="ringkv: a Dynamo-style distributed key-value store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ringkv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Everything after `node` goes to the node's own parser, untouched.
    commands.add_parser("node", add_help=False, help="run a storage node (see: ringkv node -h)")

    local = commands.add_parser("local", help="run a cluster on this machine")
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_commands.add_parser(
        "up", help="start a cluster on loopback in the foreground (Ctrl-C stops it)"
    )
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--zones", type=int, default=3, help="number of zones (default 3)")
    up.add_argument("--data-dir", default=".ringkv", help="data directory (default .ringkv)")
    up.add_argument(
        "--base-port", type=int, default=7001, help="client port of node 1 (default 7001)"
    )
    up.add_argument(
        "--replication-factor", type=int, default=3, help="replicas per key (default 3)"
    )
    up.set_defaults(handler=cmd_local_up)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--endpoint",
            default=os.environ.get("RINGKV_ENDPOINT", DEFAULT_ENDPOINT),
            help="node URL, or several comma separated "
            "(default: $RINGKV_ENDPOINT or " + DEFAULT_ENDPOINT + ")",
        )
        sub.add_argument(
            "--timeout", type=float, default=5.0, help="seconds per request (default 5)"
        )
        sub.add_argument("--json", action="store_true", help="print a JSON document")
        return sub

    def quorum_flags(sub: argparse.ArgumentParser, level: str) -> None:
        sub.add_argument(
            f"--{level}", metavar="LEVEL", help="replicas to wait for: one, quorum, all or 1..N"
        )
        sub.add_argument(
            "--consistency", choices=["strong", "balanced", "eventual"], help="preset for r and w"
        )
        sub.add_argument(
            "--strict", action="store_true", default=None, help="pass strict=true to the node"
        )

    put = client_command("put", "write a value")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", default="-", help="value, or - for stdin")
    put.add_argument("--context", help="context from an earlier get (resolves siblings)")
    quorum_flags(put, "w")
    put.set_defaults(handler=cmd_put)

    get = client_command("get", "read a value (raw bytes to stdout)")
    get.add_argument("key", metavar="KEY")
    quorum_flags(get, "r")
    get.add_argument(
        "--fail-on-siblings", action="store_true", help="exit 4 when concurrent values come back"
    )
    get.set_defaults(handler=cmd_get)

    delete = client_command("delete", "delete a key")
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("--context", help="context from an earlier get")
    quorum_flags(delete, "w")
    delete.set_defaults(handler=cmd_delete)

    status = client_command("status", "show this node and its cluster")
    status.set_defaults(handler=cmd_status)
    return parser


# --------------------------------------------------------------------------- commands


def run_node(argv: list[str]) -> int:
    from ringkv.node.main import main as node_main  # imported lazily: it pulls in the server

    return int(node_main(argv))


def cmd_local_up(args: argparse.Namespace) -> int:
    from ringkv import local

    return local.up(
        nodes=args.nodes,
        zones=args.zones,
        data_dir=args.data_dir,
        base_port=args.base_port,
        replication_factor=args.replication_factor,
    )


def cmd_put(args: argparse.Namespace) -> int:
    if args.value == "-":
        if sys.stdin.isatty():
            print("ringkv: reading the value from stdin (end it with Ctrl-D)", file=sys.stderr)
        value = sys.stdin.buffer.read()
    else:
        value = os.fsencode(args.value)
    with make_client(args) as client:
        context = client.put(
            os.fsencode(args.key),
            value,
            context=args.context,
            w=args.w,
            consistency=args.consistency,
            strict=args.strict,
        )
    if args.json:
        print_json({"ok": True, "context": context})
    else:
        print("OK")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.get(
            os.fsencode(args.key), r=args.r, consistency=args.consistency, strict=args.strict
        )
    if args.json:
        print_json(
            {
                "found": result.found,
                "value": b64(result.value) if result.value is not None else None,
                "siblings": [{"value": b64(v)} for v in result.siblings],
                "context": result.context,
            }
        )
    elif not result.found:
        print(f"ringkv: error: key not found: {args.key}", file=sys.stderr)
    elif result.value is not None:
        sys.stdout.buffer.write(result.value)
        sys.stdout.flush()
    else:
        print_siblings(args.key, result.siblings, result.context)

    if not result.found:
        return EXIT_NOT_FOUND
    if result.value is None and args.fail_on_siblings:
        return EXIT_SIBLINGS
    return EXIT_OK


def print_siblings(key: str, siblings: list[bytes], context: str | None) -> None:
    out = sys.stdout.buffer
    for number, value in enumerate(siblings, start=1):
        out.write(f"--- sibling {number} of {len(siblings)} ---\n".encode())
        out.write(value)
        out.write(b"\n")
    out.flush()
    print(
        f"ringkv: {key} has {len(siblings)} concurrent values (siblings).\n"
        f"context: {context}\n"
        f"resolve them with: ringkv put {key} VALUE --context {context}",
        file=sys.stderr,
    )


def cmd_delete(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        client.delete(
            os.fsencode(args.key),
            context=args.context,
            w=args.w,
            consistency=args.consistency,
            strict=args.strict,
        )
    if args.json:
        print_json({"ok": True})
    else:
        print("OK")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        status = client.status()
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
    return EXIT_OK


# --------------------------------------------------------------------------- output


def format_status(status: dict[str, Any]) -> str:
    node = status.get("node", {})
    cluster = status.get("cluster", {})
    lines = [
        f"node     {node.get('id')}  zone {node.get('zone')}  address {node.get('address')}"
        f"  peer {node.get('peer_address')}  state {node.get('state')}",
        f"         version {node.get('version')}  incarnation {node.get('incarnation')}"
        f"  uptime {format_seconds(node.get('uptime_seconds'))}",
        f"cluster  replication factor {cluster.get('replication_factor')}"
        f"  conflict mode {cluster.get('conflict_mode')}  vnodes {cluster.get('vnodes')}"
        f"  ring {cluster.get('ring_version')}  balance {cluster.get('balance')}",
        "",
    ]
    members = status.get("members", [])
    show_phi = any(m.get("phi") is not None for m in members)
    header = ["ID", "ZONE", "ADDRESS", "STATE", "ALIVE", "OWNERSHIP"] + (
        ["PHI"] if show_phi else []
    )
    rows = [header]
    for m in members:
        ownership = m.get("ownership")
        row = [
            str(m.get("id")),
            str(m.get("zone")),
            str(m.get("address")),
            str(m.get("state")),
            "yes" if m.get("alive") else "no",
            f"{ownership * 100:.1f}%" if isinstance(ownership, int | float) else "-",
        ]
        if show_phi:
            phi = m.get("phi")
            row.append(f"{phi:.1f}".replace("-0.0", "0.0") if isinstance(phi, int | float) else "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def format_seconds(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def report_error(exc: RingkvError) -> int:
    print(f"ringkv: error: {exc}", file=sys.stderr)
    if isinstance(exc, BadRequest):
        return EXIT_USAGE
    if isinstance(exc, Unavailable | Timeout | ConnectionFailed):
        return EXIT_UNAVAILABLE
    return EXIT_OTHER


# --------------------------------------------------------------------------- helpers


def make_client(args: argparse.Namespace) -> Client:
    return Client(args.endpoint, timeout=args.timeout)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2))
