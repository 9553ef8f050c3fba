"""The `ringkv` command: run a node, run a local cluster, read or write keys, and plan, run,
cancel and watch ring changes (`ringkv admin ...`)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv import __version__, bench
from ringkv.backup_cli import add_commands as add_backup_commands
from ringkv.client import (
    BadRequest,
    Client,
    ConnectionFailed,
    GetResult,
    PreconditionFailed,
    RingkvError,
    Timeout,
    Unavailable,
)
from ringkv.core import gossip as g
from ringkv.progress import (
    CHANGE_VIEW,
    ProgressDisplay,
    change_label,
    format_bytes,
    format_cleanup,
    format_duration,
    format_progress,
    format_rate,
    format_seconds,
    of,
)

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SIBLINGS = 4
EXIT_OTHER = 5
# A condition decided: a conditional write failed (412), or get found it unchanged (304).
EXIT_CONDITION = 6
# The admin commands reuse the numbers with meanings of the same kind:
EXIT_CANCELLED = 1  # admin --wait/--watch: the change ended cancelled
EXIT_FAILED = 3  # admin --wait/--watch: the change failed, stalled or outlived --wait-timeout
EXIT_CONFLICT = 4  # admin: HTTP 409, another change runs or the node is in the wrong state

EPILOG = """\
exit codes:
  0  success (admin --wait/--watch: the change completed)
  1  key not found (get); unknown node (admin, HTTP 404);
     the change ended cancelled (admin --wait/--watch; for cancel --wait: it completed anyway)
  2  usage error or bad request (HTTP 400, 413, 414)
  3  not enough replicas (HTTP 503), replicas timed out (HTTP 504) or no endpoint reachable;
     a ring change failed, stalled or did not end within --wait-timeout (admin --wait/--watch)
  4  get returned siblings (only with --fail-on-siblings);
     admin request refused with HTTP 409 (another ring change is running, or the node is not
     in a state that allows it)
  5  any other error answered by a node (for example HTTP 500)
  6  put/delete with --if-none-match or --if-match: the condition failed (HTTP 412);
     get --if-none-match: not modified (HTTP 304), nothing printed on stdout

examples:
  ringkv local up
  ringkv put hello world --endpoint http://127.0.0.1:7001
  echo -n world | ringkv put hello -
  ringkv put session:1 data --ttl 3600 --replace
  ringkv put lock:1 me --if-none-match
  ringkv get hello --consistency strong
  ringkv delete hello --w all
  ringkv status
  ringkv admin plan decommission n4
  ringkv admin decommission n4 --wait
  ringkv admin progress --watch
"""

ADMIN_CHANGES = ("join", "decommission", "replace", "remove")
POLL_SECONDS = 0.5  # between two progress requests while following a change
STALL_SECONDS = 15.0  # no change in progress for this long while ours has not ended: stalled

DEFAULT_ENDPOINT = "http://127.0.0.1:7001"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command == "node":
            return run_node(extra)
        if args.command == "operator":
            from ringkv.operator.main import main as operator_main  # imported lazily: kopf

            return int(operator_main(extra))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except RingkvError as exc:
        return report_error(exc, admin=args.command == "admin")
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
    commands.add_parser(
        "operator", add_help=False, help="run the Kubernetes operator (see: ringkv operator -h)"
    )

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
    up.add_argument(
        "--shards", type=int, default=1,
        help="worker processes per node (default 1; see ringkv node --shards)",
    )  # fmt: skip
    up.add_argument(
        "--monitoring", action="store_true",
        help="also start Prometheus (when installed) scraping the nodes with the shipped "
        "alerting rules, and print its URL",
    )  # fmt: skip
    up.set_defaults(handler=cmd_local_up)

    def connection_flags(sub: argparse.ArgumentParser) -> None:
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

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        connection_flags(sub)
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
    put.add_argument("--ttl", type=int, metavar="SECONDS", help="expire the value after SECONDS")
    put.add_argument(
        "--replace",
        action="store_true",
        help="replace whatever the key holds, leaving no sibling (If-Match: *)",
    )
    put.add_argument(
        "--if-none-match",
        action="store_true",
        help="write only if the key has no live value (If-None-Match: *); else exit 6",
    )
    put.add_argument(
        "--if-match",
        metavar="CONTEXT",
        help="write only if the key is still at CONTEXT (from a get); else exit 6",
    )
    quorum_flags(put, "w")
    put.set_defaults(handler=cmd_put)

    get = client_command("get", "read a value (raw bytes to stdout)")
    get.add_argument("key", metavar="KEY")
    quorum_flags(get, "r")
    get.add_argument(
        "--fail-on-siblings", action="store_true", help="exit 4 when concurrent values come back"
    )
    get.add_argument(
        "--if-none-match",
        metavar="ETAG",
        help="read only if changed: exit 6 and print nothing while the version named by ETAG "
        "(from an earlier get --json, quoted: '\"...\"'; or *) is still current",
    )
    get.set_defaults(handler=cmd_get)

    delete = client_command("delete", "delete a key")
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("--context", help="context from an earlier get")
    delete.add_argument(
        "--if-match",
        metavar="CONTEXT",
        help="delete only if the key is still at CONTEXT (from a get); else exit 6",
    )
    quorum_flags(delete, "w")
    delete.set_defaults(handler=cmd_delete)

    batch = commands.add_parser(
        "batch",
        help="read, write or delete many keys in one request per 100 keys (see -h)",
        description="Batches (POST /v1/batch/*): every key keeps its own quorum and outcome. "
        "Prints one line per key: KEY, status, and the value (get) or context (put, delete); "
        "--json prints them as JSON. Exits 0 when every key succeeded (get: found or not), "
        "else with the exit code of the first key that failed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")
    batch_get = batch_commands.add_parser("get", help="read many keys")
    connection_flags(batch_get)
    batch_get.add_argument("keys", metavar="KEY", nargs="+")
    quorum_flags(batch_get, "r")
    batch_get.set_defaults(handler=cmd_batch)
    batch_put = batch_commands.add_parser("put", help="write many KEY=VALUE pairs")
    connection_flags(batch_put)
    batch_put.add_argument("pairs", metavar="KEY=VALUE", nargs="+")
    batch_put.add_argument("--ttl", type=int, metavar="SECONDS", help="expire after SECONDS")
    batch_put.add_argument("--replace", action="store_true", help="If-Match: * for every key")
    batch_put.add_argument(
        "--if-none-match", action="store_true", help="create only (If-None-Match: *)"
    )
    quorum_flags(batch_put, "w")
    batch_put.set_defaults(handler=cmd_batch)
    batch_delete = batch_commands.add_parser("delete", help="delete many keys")
    connection_flags(batch_delete)
    batch_delete.add_argument("keys", metavar="KEY", nargs="+")
    quorum_flags(batch_delete, "w")
    batch_delete.set_defaults(handler=cmd_batch)

    keys = client_command(
        "keys", "list the keys, one per line, page after page (an administrative scan)"
    )
    keys.add_argument("--prefix", default="", help="only keys starting with PREFIX")
    keys.add_argument(
        "--page-size", type=int, default=None, help="keys per request (default 100, at most 1000)"
    )
    keys.add_argument("--limit", type=int, default=None, help="stop after this many keys")
    keys.add_argument(
        "--r",
        metavar="LEVEL",
        help="merge R replicas per range and list only keys live at a read at R",
    )
    keys.set_defaults(handler=cmd_keys)

    status = client_command("status", "show this node and its cluster")
    status.set_defaults(handler=cmd_status)
    bench_cmd = commands.add_parser(
        "bench", help="load generator: throughput and latency percentiles (see -h)"
    )
    bench.add_arguments(bench_cmd)
    bench_cmd.set_defaults(handler=bench.run)

    admin = commands.add_parser(
        "admin",
        help="plan, run, cancel and watch ring changes (see: ringkv admin -h)",
        description="Ring changes (one at a time per cluster): see docs/operations-ring.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    def admin_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = admin_commands.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        connection_flags(sub)
        return sub

    def wait_flags(sub: argparse.ArgumentParser, flag: str, what: str) -> None:
        sub.add_argument(flag, action="store_true", help=what)
        sub.add_argument(
            "--wait-timeout",
            type=float,
            default=3600.0,
            metavar="SECONDS",
            help=f"with {flag}: give up after this long and exit 3 (default 3600)",
        )

    plan = admin_command("plan", "show what a ring change would move, without running it")
    plan.add_argument("op", metavar="OP", choices=ADMIN_CHANGES, help=" | ".join(ADMIN_CHANGES))
    plan.add_argument("node", metavar="NODE", help="the node the change is about")
    plan.set_defaults(handler=cmd_admin_plan)

    change_help = {
        "join": "stream this node's future ranges to it, then make it normal (send it "
        "to a node started with --auto-join false)",
        "decommission": "stream the node's ranges to their new owners, then mark it left",
        "replace": "refill a node that took over a dead node's id (same tokens, empty disk)",
        "remove": "forget a dead node for good and re-replicate its ranges from the "
        "survivors (driven by the --endpoint node)",
    }
    for action in ADMIN_CHANGES:
        sub = admin_command(action, change_help[action])
        sub.add_argument("node", metavar="NODE", help="the node the change is about")
        wait_flags(sub, "--wait", "follow the progress until the change ends")
        sub.set_defaults(handler=cmd_admin_change)

    cancel = admin_command("cancel", "cancel the running ring change (undone safely)")
    cancel.add_argument(
        "node", metavar="NODE", nargs="?", help="the node driving it (default: the running one)"
    )
    wait_flags(cancel, "--wait", "follow the change until it ends (exit 0 once cancelled)")
    cancel.set_defaults(handler=cmd_admin_change)

    cleanup = admin_command(
        "cleanup", "delete the ranges nodes no longer replicate now (runs by itself after changes)"
    )
    cleanup.add_argument("--node", metavar="NODE", help="only on this node (default: every one)")
    wait_flags(cleanup, "--wait", "wait until every node asked has finished")
    cleanup.set_defaults(handler=cmd_admin_cleanup)

    progress = admin_command("progress", "show the running (or the last) ring change")
    wait_flags(progress, "--watch", "follow the running change until it ends")
    progress.set_defaults(handler=cmd_admin_progress)
    add_backup_commands(admin_command)  # backup, restore, backups, prune-backups
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
        monitoring=args.monitoring,
        shards=args.shards,
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
            ttl=args.ttl,
            if_match=args.if_match,
            if_none_match=args.if_none_match,
            replace=args.replace,
        )
    if args.json:
        print_json({"ok": True, "context": context})
    else:
        print("OK")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.get(
            os.fsencode(args.key),
            r=args.r,
            consistency=args.consistency,
            strict=args.strict,
            if_none_match=args.if_none_match,
        )
    if result.not_modified:
        if args.json:
            print_json({"not_modified": True, "etag": result.etag})
        return EXIT_CONDITION
    if args.json:
        print_json(
            {
                "found": result.found,
                "value": b64(result.value) if result.value is not None else None,
                "siblings": [{"value": b64(v)} for v in result.siblings],
                "context": result.context,
                "ttl": result.ttl,
                "etag": result.etag,
            }
        )
    elif not result.found:
        print(f"ringkv: error: key not found: {args.key}", file=sys.stderr)
    elif result.value is not None:
        sys.stdout.buffer.write(result.value)
        sys.stdout.flush()
    else:
        print_siblings(args.key, result.siblings, result.context)
    if result.found and result.ttl is not None and not args.json:
        print(f"ringkv: ttl: {result.ttl} s until {args.key} expires", file=sys.stderr)

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
            if_match=args.if_match,
        )
    if args.json:
        print_json({"ok": True})
    else:
        print("OK")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        if args.batch_command == "get":
            keys = [os.fsencode(k) for k in args.keys]
            outcomes: dict[Any, Any] = client.get_many(
                keys, r=args.r, consistency=args.consistency, strict=args.strict
            )
        elif args.batch_command == "put":
            values: dict[bytes, bytes] = {}
            for pair in args.pairs:
                key, sep, value = pair.partition("=")
                if not sep or not key:
                    print(f"ringkv: error: {pair!r} is not KEY=VALUE", file=sys.stderr)
                    return EXIT_USAGE
                values[os.fsencode(key)] = os.fsencode(value)
            keys = list(values)
            outcomes = client.put_many(
                values, ttl=args.ttl, replace=args.replace, if_none_match=args.if_none_match,
                w=args.w, consistency=args.consistency, strict=args.strict,
            )  # fmt: skip
        else:
            keys = [os.fsencode(k) for k in args.keys]
            outcomes = client.delete_many(
                keys, w=args.w, consistency=args.consistency, strict=args.strict
            )
    code = EXIT_OK
    rows = []
    for key in keys:
        outcome = outcomes[key]
        row: dict[str, Any] = {"key": os.fsdecode(key)}
        if isinstance(outcome, RingkvError):
            row.update(status=outcome.status, error=outcome.code, message=outcome.message)
            if code == EXIT_OK:
                code = report_error(outcome)  # says so on stderr, for the first failure
        elif isinstance(outcome, GetResult):
            row.update(found=outcome.found, context=outcome.context, ttl=outcome.ttl,
                       siblings=[b64(v) for v in outcome.siblings])  # fmt: skip
        else:
            row.update(status=204, context=outcome)
        rows.append(row)
    if args.json:
        print_json({"results": rows})
    else:
        for row in rows:
            print(format_batch_row(row, outcomes[os.fsencode(row["key"])]))
    return code


def format_batch_row(row: dict[str, Any], outcome: object) -> str:
    if "error" in row:
        return f"{row['key']}\t{row['status']}\t{row['error']}"
    if isinstance(outcome, GetResult):
        if not outcome.found:
            return f"{row['key']}\t404\tnot found"
        if outcome.value is None:
            return f"{row['key']}\t300\t{len(outcome.siblings)} siblings"
        return f"{row['key']}\t200\t{outcome.value.decode('utf-8', 'backslashreplace')}"
    return f"{row['key']}\t204\t{row['context']}"


def cmd_keys(args: argparse.Namespace) -> int:
    """Stream the listing: each page is printed as it arrives."""
    out = sys.stdout.buffer
    printed = 0
    with make_client(args) as client:
        for key in client.iter_keys(os.fsencode(args.prefix) or None, args.page_size, args.r):
            if args.json:
                out.write(json.dumps({"key": b64(key)}).encode() + b"\n")
            else:
                out.write(key + b"\n")
            printed += 1
            if printed % 100 == 0:
                out.flush()
            if args.limit is not None and printed >= args.limit:
                break
    out.flush()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        status = client.status()
    return show(args, status, format_status)


# --------------------------------------------------------------------------- admin commands


def cmd_admin_plan(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        plan = client.plan(args.op, args.node)
    return show(args, plan, format_plan)


def cmd_admin_change(args: argparse.Namespace) -> int:
    """join / decommission / replace / remove NODE, and cancel [NODE]; optionally --wait."""
    action: str = args.admin_command
    node: str | None = args.node
    with make_client(args) as client:
        # What the driver reported before the request, to tell its next report from old ones.
        baseline = report_times(client.progress()) if args.wait else {}
        answer = client.admin(action, node)
        if not args.wait:
            if args.json:
                print_json(answer)
            else:
                print(format_accepted(action, node, answer))
            return EXIT_OK
        if not args.json:
            print(format_accepted(action, node, answer), flush=True)
        driver = str(answer.get("driver") or node or "")
        label = f"{action} {node}" if action != "cancel" else f"the change driven by {driver}"
        outcome = follow_and_report(
            client, args, driver=driver, baseline=baseline, label=label, op=action, node=node
        )
    if args.json:
        print_json({**answer, "outcome": outcome.state, "change": outcome.report})
    return outcome_exit_code(outcome.state, cancelling=action == "cancel")


def cmd_admin_cleanup(args: argparse.Namespace) -> int:
    """cleanup [--node N] [--wait]: run cleanup now; with --wait, until each node finished
    (exit 0), or 3 when --wait-timeout runs out (a node held back: see the reason)."""
    with make_client(args) as client:
        answer = client.cleanup(args.node)
        rows = answer.get("nodes", [])
        if not args.json:
            for row in rows:
                started = "started" if row.get("accepted") else f"not reached: {row.get('error')}"
                print(f"cleanup on {row.get('node')}: {started}", flush=True)
        if not args.wait:
            if args.json:
                print_json(answer)
            else:
                print("watch it with: ringkv admin progress")
            return EXIT_OK
        asked = {str(r["node"]): int(r.get("requested_ms") or 0) for r in rows if r.get("accepted")}
        deadline = time.monotonic() + args.wait_timeout
        reports: list[dict[str, Any]] = []
        while True:
            try:
                reports = client.progress().get("cleanup") or []
            except RingkvError:
                reports = []
            by_node = {str(r.get("node")): r for r in reports}
            finished = [
                n for n, since in asked.items()
                if by_node.get(n, {}).get("state") == "done"
                and int(by_node[n].get("finished_ms") or 0) >= since
            ]  # fmt: skip
            if len(finished) == len(asked) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    done = len(finished) == len(asked)
    shown = [r for r in reports if str(r.get("node")) in asked]
    if args.json:
        print_json({**answer, "outcome": "done" if done else "timeout", "cleanup": shown})
    else:
        print("\n".join(format_cleanup(shown)))
        print("cleanup done" if done else "cleanup still running or held after "
              f"{format_duration(args.wait_timeout)}")  # fmt: skip
    return EXIT_OK if done else EXIT_FAILED


def cmd_admin_progress(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        document = client.progress()
        running = next(
            (r for r in document.get("changes", []) if r.get("state") == "running"), None
        )
        if not args.watch or (running is None and document.get("in_progress") is None):
            return show(args, document, format_progress)
        if running is not None:  # follow that report
            driver: str | None = str(running.get("reported_by"))
            baseline: dict[str, int] = {}
            label = change_label(running)
        else:  # announced, not streaming yet: follow whichever report comes next
            driver, baseline = None, report_times(document)
            label = str(document.get("in_progress"))
        outcome = follow_and_report(
            client, args, driver=driver, baseline=baseline, label=label, op=None, node=None
        )
    if args.json:
        print_json(outcome.document or document)
    return outcome_exit_code(outcome.state)


@dataclass
class Outcome:
    """How following a change ended: done, cancelled, failed, stalled or timeout."""

    state: str
    report: dict[str, Any] | None
    document: dict[str, Any] | None


def report_times(document: dict[str, Any]) -> dict[str, int]:
    """updated_ms of every change report, by the node that published it."""
    return {
        str(r.get("reported_by")): int(r.get("updated_ms") or 0)
        for r in document.get("changes", [])
    }


def pick_report(
    document: dict[str, Any], driver: str | None, baseline: dict[str, int]
) -> dict[str, Any] | None:
    """The report of the change being followed: published by `driver` (any node when None)
    after the baseline (reports are running first, then newest first)."""
    reports: list[dict[str, Any]] = document.get("changes", [])
    for report in reports:
        by = str(report.get("reported_by"))
        if driver is not None and by != driver:
            continue
        if int(report.get("updated_ms") or 0) > baseline.get(by, -1):
            return report
    return None


def outcome_exit_code(state: str, cancelling: bool = False) -> int:
    """0 done, 1 cancelled, 3 failed / stalled / timeout; `cancel --wait` swaps 0 and 1."""
    if state == "done":
        return EXIT_CANCELLED if cancelling else EXIT_OK
    if state == "cancelled":
        return EXIT_OK if cancelling else EXIT_CANCELLED
    return EXIT_FAILED


def follow_and_report(
    client: Client,
    args: argparse.Namespace,
    *,
    driver: str | None,
    baseline: dict[str, int],
    label: str,
    op: str | None,
    node: str | None,
) -> Outcome:
    """Follow the change with a live display (nothing shown with --json), then summarise."""
    waiting = (
        f"{label}: waiting for {driver} to stop after its current batch"
        if op == "cancel"
        else f"{label}: waiting for every member to see the change"
    )
    display = ProgressDisplay(sys.stdout, CHANGE_VIEW, enabled=not args.json)
    try:
        outcome = follow_change(
            client,
            display,
            driver=driver,
            baseline=baseline,
            label=label,
            wait_timeout=args.wait_timeout,
            op=op,
            node=node,
            waiting=waiting,
        )
    except KeyboardInterrupt:
        display.close()
        print(
            "ringkv: stopped following; the change goes on "
            "(ringkv admin progress --watch, ringkv admin cancel)",
            file=sys.stderr,
        )
        raise
    display.finish(summary_line(outcome, label, args.wait_timeout))
    return outcome


def follow_change(
    client: Client,
    display: ProgressDisplay,
    *,
    driver: str | None,
    baseline: dict[str, int],
    label: str,
    wait_timeout: float,
    op: str | None = None,
    node: str | None = None,
    waiting: str = "waiting for the change to start",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Poll GET /v1/admin/progress every POLL_SECONDS until the followed change ends.

    A ``failed`` report while the change is still announced (``in_progress``) means the
    driver retries, so following goes on. When no change has been in progress for
    STALL_SECONDS and the followed one has not ended, the driver is down (``stalled``) -- or,
    for a change that had nothing to stream (the first node of a cluster joining), already
    complete, which the node states then show.
    """
    deadline = clock() + wait_timeout
    quiet_since: float | None = None
    report: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    while True:
        now = clock()
        try:
            document = client.progress()
        except (ConnectionFailed, Timeout, Unavailable) as exc:  # passing trouble: keep going
            display.show(report, f"{label}: cannot read the progress ({exc.message}); retrying")
        else:
            found = pick_report(document, driver, baseline)
            if found is not None:
                report, driver = found, str(found.get("reported_by"))
            state = report.get("state") if report is not None else None
            in_progress = document.get("in_progress")
            if state in ("done", "cancelled") or (state == "failed" and in_progress is None):
                return Outcome(str(state), report, document)
            if in_progress is None:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= STALL_SECONDS:
                    if report is None and settled(client, op, node):
                        return Outcome("done", None, document)
                    return Outcome("stalled", report, document)
            else:
                quiet_since = None
            display.show(report, waiting)
        remaining = deadline - clock()
        if remaining <= 0:
            return Outcome("timeout", report, document)
        sleep(min(POLL_SECONDS, remaining))


def settled(client: Client, op: str | None, node: str | None) -> bool:
    """True when the node states show `op` on `node` complete (no streaming was needed)."""
    final = {"join": g.NORMAL, "replace": g.NORMAL, "decommission": g.LEFT}.get(op or "")
    if final is None or node is None:
        return False
    try:
        members = client.status().get("members", [])
    except RingkvError:
        return False
    return any(m.get("id") == node and m.get("state") == final for m in members)


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
    cleanup = status.get("cleanup")
    if isinstance(cleanup, dict):
        lines.insert(
            -1,
            f"disk     {format_bytes(cleanup.get('disk_bytes'))}  cleanup {cleanup.get('state')}"
            f"  reclaimed {format_bytes(cleanup.get('reclaimed_bytes'))}"
            f"  ({cleanup.get('keys_done', 0)} keys removed in the last round)",
        )
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


def format_plan(plan: dict[str, Any]) -> str:
    """Riak-style `cluster plan`: what each target receives, from whom; totals; fraction."""
    transfers: list[dict[str, Any]] = plan.get("transfers", [])
    lines = [
        f"plan: {plan.get('op')} {plan.get('node')}  "
        f"(ring nodes {plan.get('ring_nodes_before')} -> {plan.get('ring_nodes_after')}); "
        "nothing has been changed"
    ]
    if not transfers:
        lines.append("no data moves")
        return "\n".join(lines)

    def amount(values: list[Any], render: Callable[[object], str]) -> str:
        known = [v for v in values if isinstance(v, int | float)]
        if not known:
            return "?"
        total = render(sum(known))
        return total if len(known) == len(values) else ">=" + total

    def sources(group: list[dict[str, Any]]) -> str:
        counts = Counter(t.get("source") for t in group)
        return ", ".join(
            f"{source if source is not None else 'no live source'} ({count})"
            for source, count in sorted(
                counts.items(), key=lambda c: (-c[1], c[0] is None, str(c[0]))
            )
        )

    by_target: dict[str, list[dict[str, Any]]] = {}
    for t in transfers:
        by_target.setdefault(str(t.get("target")), []).append(t)
    header = ["TARGET", "RANGES", "KEYS", "BYTES", "FROM (RANGES)"]
    rows = [header]
    for target in sorted(by_target):
        group = by_target[target]
        rows.append(
            [
                target,
                str(len(group)),
                amount([t.get("keys") for t in group], str),
                amount([t.get("bytes") for t in group], format_bytes),
                sources(group),
            ]
        )
    rows.append(
        [
            "total",
            str(len(transfers)),
            amount([t.get("keys") for t in transfers], str),
            amount([t.get("bytes") for t in transfers], format_bytes),
            sources(transfers),
        ]
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    fraction = plan.get("moved_fraction_of_one_copy")
    lines.append("")
    if isinstance(fraction, int | float):
        lines.append(
            f"moves {fraction * 100:.1f}% of one copy of the data "
            f"({plan.get('keys')} keys, {format_bytes(plan.get('bytes'))} in all)"
        )
    unsourced = plan.get("unsourced") or 0
    if unsourced:
        lines.append(
            f"warning: {unsourced} ranges have no live source and cannot be streamed; "
            "anti-entropy refills them if a replica comes back"
        )
    return "\n".join(lines)


def format_accepted(action: str, node: str | None, answer: dict[str, Any]) -> str:
    driver = answer.get("driver")
    if action == "cancel":
        return f"cancel requested: the change driven by {driver} is being undone"
    what = {
        "join": f"{node} is joining the ring",
        "decommission": f"{node} is leaving the ring",
        "replace": f"{node} is being refilled from its replicas",
        "remove": f"{node} is being removed; its ranges are re-replicated",
    }.get(action, f"{action} {node}")
    return f"accepted: {what} (driven by {driver})"


def summary_line(outcome: Outcome, label: str, wait_timeout: float) -> str:
    report = outcome.report or {}
    what = change_label(report) if report.get("op") else label
    took = ""
    started, finished = report.get("started_ms"), report.get("finished_ms")
    seconds = None
    if isinstance(started, int) and isinstance(finished, int):
        seconds = max(0, finished - started) / 1000
        took = f" in {format_duration(seconds)}"
    moved = ""
    if report.get("transfers") is not None:
        sent = report.get("bytes_sent")
        moved = (
            f": {of(report.get('transfers_done'), report.get('transfers'))} transfers, "
            f"{report.get('keys_sent')} keys, {format_bytes(sent)} sent"
        )
        if seconds and isinstance(sent, int | float):
            moved += f" ({format_rate(sent / seconds)} on average)"
    if outcome.state == "done":
        return f"{what} done{took}{moved}"
    if outcome.state == "cancelled":
        return f"{what} cancelled{took}{moved}; the ring is as it was before"
    if outcome.state == "failed":
        return f"{what} failed{moved}; see the log of {report.get('reported_by', 'the driver')}"
    if outcome.state == "stalled":
        driver = report.get("reported_by")
        return (
            f"{what} stalled{moved}: no change is in progress any more "
            f"(is {f'the driver {driver}' if driver else 'its driver'} down?); "
            "a restarted driver resumes it"
        )
    return (
        f"{what} still running after {format_duration(wait_timeout)}{moved}; "
        "watch it with: ringkv admin progress --watch"
    )


def report_error(exc: RingkvError, admin: bool = False) -> int:
    print(f"ringkv: error: {exc}", file=sys.stderr)
    if admin:
        if exc.status == 409:
            if exc.code == "change_in_progress":
                print(
                    "ringkv: one ring change runs at a time: watch it with "
                    "`ringkv admin progress --watch` or stop it with `ringkv admin cancel`",
                    file=sys.stderr,
                )
            return EXIT_CONFLICT
        if exc.status == 404:
            return EXIT_NOT_FOUND
    if isinstance(exc, BadRequest):
        return EXIT_USAGE
    if isinstance(exc, PreconditionFailed):
        return EXIT_CONDITION
    if isinstance(exc, Unavailable | Timeout | ConnectionFailed):
        return EXIT_UNAVAILABLE
    return EXIT_OTHER


# --------------------------------------------------------------------------- helpers


def make_client(args: argparse.Namespace) -> Client:
    return Client(args.endpoint, timeout=args.timeout)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def show(args: argparse.Namespace, document: Any, render: Callable[[Any], str]) -> int:
    """An answer as JSON with --json, else as ``render`` writes it; exit 0."""
    if args.json:
        print_json(document)
    else:
        print(render(document))
    return EXIT_OK


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2))
