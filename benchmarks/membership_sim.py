"""Membership at scale, simulated: the pure core driven with simulated time and a lossy network.

Each simulated member runs what ``ringkv.node.membership`` runs, with the same pure parts
(``Gossiper``, ``Watch``, ``PhiAccrualFailureDetector``, ``convicted``) and the same periods:
every heartbeat interval (0.5 s) it heartbeats the members its ``Watch`` assigns it, judges
them by phi, asks ``INDIRECT_PROBES`` others to probe a suspect and publishes convictions in
gossip; every gossip interval (1 s, +-20 %) it runs a summary/digest/delta exchange with a
random member it holds for alive. No sockets and no clock: messages are events on a queue,
each lost with probability ``--loss`` and delayed by 0.5 ms plus a uniform jitter in
``[0, --jitter]``; a request's answer counts only if it arrives within the node's timeout.

Reported, for each cluster size:

- the time for a join, a leave and a crash to be known by every member (p50, p99 and max over
  the members of the time each one learned of it; a crash is known when the member holds the
  node for down: convicted by itself or by a member that watches it);
- false convictions per member-hour while every member is up, at each loss rate;
- messages and bytes sent per node per second (msgpack sizes plus a 16-byte frame header),
  heartbeats and gossip apart;
- CPU per gossip round per node (the pure steps of both sides of an exchange).

Run: ``.venv/bin/python benchmarks/membership_sim.py --members 100,1000,5000``
(``--quick`` for a short smoke run). Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ringkv.core import gossip as g
from ringkv.core.failure_detector import (
    INDIRECT_PROBES,
    PhiAccrualFailureDetector,
    Watch,
    watch_order,
)

HEARTBEAT = 0.5
GOSSIP = 1.0
FRAME = 16  # bytes of framing per message (length, verb, request id)
LATENCY = 0.0005
NEWS_PUSH_GAP = 0.5  # ringkv.node.membership pushes news at most this often


def size_of(payload: Any) -> int:
    return len(msgpack.packb(payload)) + FRAME


@dataclass
class Member:
    node_id: str
    gossiper: g.Gossiper
    watch: Watch
    up: bool = True
    down_view: set[str] = field(default_factory=set)  # convicted by the members watching them
    accusers: set[str] = field(default_factory=set)  # members whose DOWN is not empty
    published: dict[str, list[int]] = field(default_factory=dict)
    last_push: float = -1.0


class Sim:
    def __init__(self, members: int, loss: float, jitter: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.jitter = jitter
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.sent = {"heartbeat": [0, 0], "gossip": [0, 0]}  # kind -> [messages, bytes]
        self.gossip_cpu = 0.0
        self.gossip_rounds = 0
        self.false_convictions = 0
        self.on_change: list[Callable[[Member], None]] = []
        ids = [f"node-{i:05d}" for i in range(members)]
        self.members: dict[str, Member] = {}
        for i, node in enumerate(ids):
            gossiper = g.Gossiper(
                node,
                generation=1_000_000 + i,
                app={g.ZONE: f"zone-{i % 3}", g.STATUS: g.NORMAL, g.PEER_ADDRESS: f"{node}:7001"},
            )
            detector = PhiAccrualFailureDetector(first_interval=HEARTBEAT)
            self.members[node] = Member(node, gossiper, Watch(node, detector, confirm=HEARTBEAT))
        # Start converged: every member knows every other's state (shared, never changed in place).
        snapshot = {
            node: g.EndpointState(m.gossiper.local.generation, 0, dict(m.gossiper.local.app))
            for node, m in self.members.items()
        }
        for m in self.members.values():
            m.gossiper.adopt(snapshot)
        self.order = watch_order(ids)
        self.ids = ids
        self.ping_size = size_of({"node": ids[0]})
        for m in self.members.values():
            self.at(self.rng.uniform(0, HEARTBEAT), self.heartbeat_round, m)
            self.at(self.rng.uniform(0, GOSSIP), self.gossip_round, m)

    # -- the event loop -----------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, fn, args))

    def run_until(self, end: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= end:
            when, _, fn, args = heapq.heappop(queue)
            self.now = when
            fn(*args)
        self.now = end

    def send(
        self, kind: str, src: Member, dst: str, size: int, fn: Callable[..., None], *args: Any
    ) -> None:
        """A message from src to dst; fn(*args) runs on arrival unless it is lost."""
        counter = self.sent[kind]
        counter[0] += 1
        counter[1] += size
        if not src.up or self.rng.random() < self.loss:
            return
        target = self.members.get(dst)
        if target is None or not target.up:
            return
        self.at(self.now + LATENCY + self.rng.uniform(0, self.jitter), fn, *args)

    # -- heartbeats -------------------------------------------------------------------------

    def heartbeat_round(self, m: Member) -> None:
        if not m.up:
            return
        self.at(self.now + HEARTBEAT, self.heartbeat_round, m)
        watch = m.watch
        targets = watch.targets(self.order, m.down_view)
        before = set(watch.convicted)
        for suspect in watch.tick(self.now, targets):
            helpers: list[str] = []
            for _ in range(4 * INDIRECT_PROBES):
                pick = self.ids[self.rng.randrange(len(self.ids))]
                if (
                    pick not in (m.node_id, suspect)
                    and pick not in m.down_view
                    and pick not in helpers
                ):
                    helpers.append(pick)
                if len(helpers) == INDIRECT_PROBES:
                    break
            for helper in helpers:
                size = size_of({"node": suspect})
                self.send(
                    "heartbeat", m, helper, size, self.on_ping_req, m, helper, suspect, self.now
                )
        for node in watch.convicted - before:
            if self.members[node].up:
                self.false_convictions += 1
        if watch.convicted != before or m.published.keys() != watch.convicted:
            self.publish(m)
        for target in targets:
            self.send("heartbeat", m, target, self.ping_size, self.on_ping, m, target, self.now)

    def on_ping(self, src: Member, target: str, sent: float) -> None:
        dst = self.members[target]
        self.send("heartbeat", dst, src.node_id, self.ping_size, self.on_ack, src, target, sent)

    def on_ack(self, src: Member, target: str, sent: float) -> None:
        if src.up and self.now - sent <= HEARTBEAT:
            src.watch.heard(target, self.now)

    def on_ping_req(self, requester: Member, helper: str, suspect: str, sent: float) -> None:
        h = self.members[helper]
        self.send(
            "heartbeat",
            h,
            suspect,
            self.ping_size,
            self.on_indirect_ping,
            requester,
            h,
            suspect,
            sent,
        )

    def on_indirect_ping(
        self, requester: Member, helper: Member, suspect: str, sent: float
    ) -> None:
        s = self.members[suspect]
        self.send(
            "heartbeat",
            s,
            helper.node_id,
            self.ping_size,
            self.on_indirect_ack,
            requester,
            helper,
            suspect,
            sent,
        )

    def on_indirect_ack(self, requester: Member, helper: Member, suspect: str, sent: float) -> None:
        size = size_of({"ok": True})
        self.send(
            "heartbeat",
            helper,
            requester.node_id,
            size,
            self.on_ping_req_answer,
            requester,
            suspect,
            sent,
        )

    def on_ping_req_answer(self, requester: Member, suspect: str, sent: float) -> None:
        if requester.up and self.now - sent <= 2 * HEARTBEAT:
            requester.watch.heard(suspect, self.now)

    def publish(self, m: Member) -> None:
        states = m.gossiper.states
        down = {
            node: [states[node].generation, states[node].max_version]
            for node in sorted(m.watch.convicted)
            if node in states
        }
        m.published = down
        m.gossiper.set_app(g.DOWN, down)
        self.refresh(m, {m.node_id})

    def refresh(self, m: Member, changed: set[str]) -> None:
        """What the node does after its view changed: who is convicted; refute if it is us."""
        states = m.gossiper.states
        for node in changed:
            state = states.get(node)
            if state is not None and state.get(g.DOWN):
                m.accusers.add(node)
            else:
                m.accusers.discard(node)
        if m.accusers or m.down_view:
            down = g.convicted(states, m.accusers)
            if m.node_id in down:
                m.gossiper.set_app(g.ALIVE, int(m.gossiper.local.get(g.ALIVE, 0)) + 1)
                down.discard(m.node_id)
            m.down_view = down
        if self.now - m.last_push >= NEWS_PUSH_GAP:
            # News travels on at once rather than at the next round (as the node does).
            m.last_push = self.now
            self.at(self.now, self.exchange, m)
        for callback in self.on_change:
            callback(m)

    # -- gossip -------------------------------------------------------------------------------

    def gossip_round(self, m: Member) -> None:
        if not m.up:
            return
        self.at(self.now + GOSSIP * self.rng.uniform(0.8, 1.2), self.gossip_round, m)
        self.exchange(m)

    def exchange(self, m: Member) -> None:
        if not m.up:
            return
        peer = None
        for _ in range(8):
            pick = self.ids[self.rng.randrange(len(self.ids))]
            if pick != m.node_id and pick not in m.down_view and pick not in m.watch.convicted:
                peer = pick
                break
        if peer is None:
            return
        start = time.perf_counter()
        syn = {"summary": m.gossiper.summary()}
        self.gossip_cpu += time.perf_counter() - start
        self.gossip_rounds += 1
        self.send("gossip", m, peer, size_of(syn), self.on_syn, m, peer, syn, self.now)

    def on_syn(self, a: Member, peer: str, syn: dict[str, Any], sent: float) -> None:
        b = self.members[peer]
        start = time.perf_counter()
        buckets = b.gossiper.differing(syn["summary"])
        ack = {"buckets": buckets, "digests": b.gossiper.digests_in(buckets)}
        self.gossip_cpu += time.perf_counter() - start
        self.send("gossip", b, a.node_id, size_of(ack), self.on_ack1, a, b, ack, sent)

    def on_ack1(self, a: Member, b: Member, ack: dict[str, Any], sent: float) -> None:
        if not ack["buckets"] or self.now - sent > GOSSIP:
            return
        start = time.perf_counter()
        deltas, requests = a.gossiper.reconcile(ack["digests"], ack["buckets"])
        self.gossip_cpu += time.perf_counter() - start
        if deltas or requests:
            body = {"deltas": deltas, "requests": requests}
            self.send("gossip", a, b.node_id, size_of(body), self.on_ack2, a, b, body, self.now)

    def on_ack2(self, a: Member, b: Member, body: dict[str, Any], sent: float) -> None:
        start = time.perf_counter()
        changed = b.gossiper.apply(body["deltas"])
        reply = {"deltas": b.gossiper.deltas_for(body["requests"])} if body["requests"] else {}
        self.gossip_cpu += time.perf_counter() - start
        if changed:
            self.refresh(b, changed)
        if reply:
            self.send("gossip", b, a.node_id, size_of(reply), self.on_reply, a, reply, sent)

    def on_reply(self, a: Member, reply: dict[str, Any], sent: float) -> None:
        if self.now - sent > 2 * GOSSIP:
            return
        start = time.perf_counter()
        changed = a.gossiper.apply(reply["deltas"])
        self.gossip_cpu += time.perf_counter() - start
        if changed:
            self.refresh(a, changed)

    # -- scenarios ----------------------------------------------------------------------------

    def watch_for(self, test: Callable[[Member], bool]) -> dict[str, float]:
        """Record, for every up member, the first time ``test`` holds for it."""
        seen: dict[str, float] = {}

        def check(m: Member) -> None:
            if m.node_id not in seen and m.up and test(m):
                seen[m.node_id] = self.now

        self.on_change.append(check)
        for m in self.members.values():
            check(m)
        return seen

    def until_known(
        self, seen: dict[str, float], start: float, limit: float, subject: str
    ) -> tuple[list[float], int]:
        """Run until every up member but ``subject`` has seen it (or ``limit`` s passed);
        returns the delays and how many members should have seen it."""
        expected = sum(1 for m in self.members.values() if m.up and m.node_id != subject)
        step = 0.25
        while self.now < start + limit:
            self.run_until(self.now + step)
            if sum(1 for n in seen if n != subject) >= expected:
                break
        self.on_change.clear()
        return sorted(t - start for n, t in seen.items() if n != subject), expected


def percentiles(result: tuple[list[float], int]) -> dict[str, Any]:
    values, expected = result
    if len(values) < expected:
        return {"p50": None, "p99": None, "max": None, "known_by": f"{len(values)}/{expected}"}
    q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
    return {"p50": round(q[49], 2), "p99": round(q[98], 2), "max": round(max(values), 2),
            "known_by": f"{len(values)}/{expected}"}  # fmt: skip


def propagation(members: int, seed: int, limit: float) -> dict[str, Any]:
    """Join, leave and crash on a converged cluster with 1 % loss and 50 ms jitter."""
    sim = Sim(members, 0.01, 0.05, seed)
    sim.run_until(5.0)
    out: dict[str, Any] = {}

    # join: a new member contacts one seed
    node = "newcomer"
    gossiper = g.Gossiper(node, 9_000_000, {g.ZONE: "zone-0", g.STATUS: g.JOINING})
    gossiper.adopt(
        {n: s for n, s in sim.members[sim.ids[0]].gossiper.states.items() if n != sim.ids[0]}
    )
    newcomer = Member(node, gossiper, Watch(node, PhiAccrualFailureDetector(), confirm=HEARTBEAT))
    sim.members[node] = newcomer
    seen = sim.watch_for(lambda m: node in m.gossiper.states)
    start = sim.now
    sim.gossip_round(newcomer)
    out["join"] = percentiles(sim.until_known(seen, start, limit, node))

    # leave: a member announces it left
    leaver = sim.members[sim.ids[1]]
    leaver.gossiper.set_app(g.STATUS, g.LEFT)
    seen = sim.watch_for(lambda m: m.gossiper.states[leaver.node_id].get(g.STATUS) == g.LEFT)
    start = sim.now
    out["leave"] = percentiles(sim.until_known(seen, start, limit, leaver.node_id))

    # crash: a member stops answering
    victim = sim.members[sim.ids[members // 2]]
    victim.up = False
    crashed = victim.node_id
    seen = sim.watch_for(lambda m: crashed in m.down_view or crashed in m.watch.convicted)
    start = sim.now
    out["crash"] = percentiles(sim.until_known(seen, start, limit, crashed))
    return out


def steady(members: int, loss: float, seconds: float, seed: int) -> dict[str, Any]:
    """Every member up: false convictions, traffic and gossip CPU."""
    sim = Sim(members, loss, 0.05, seed)
    sim.run_until(5.0)  # warm up the detectors' windows
    sim.false_convictions = 0
    sim.sent = {"heartbeat": [0, 0], "gossip": [0, 0]}
    sim.gossip_cpu, sim.gossip_rounds = 0.0, 0
    sim.run_until(5.0 + seconds)
    node_seconds = members * seconds
    hb, go = sim.sent["heartbeat"], sim.sent["gossip"]
    return {
        "false_convictions": sim.false_convictions,
        "member_hours": round(node_seconds / 3600, 2),
        "false_per_member_hour": round(sim.false_convictions / (node_seconds / 3600), 4),
        "msgs_per_node_s": round((hb[0] + go[0]) / node_seconds, 1),
        "heartbeat_bytes_per_node_s": round(hb[1] / node_seconds),
        "gossip_bytes_per_node_s": round(go[1] / node_seconds),
        "bytes_per_node_s": round((hb[1] + go[1]) / node_seconds),
        "gossip_cpu_us_per_round": round(sim.gossip_cpu / max(1, sim.gossip_rounds) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default="100,1000,5000")
    parser.add_argument("--losses", default="0.01,0.05")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state run per case")
    parser.add_argument("--limit", type=float, default=60.0, help="give up on a propagation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100 members, 10 s")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    sizes = [100] if args.quick else [int(v) for v in args.members.split(",")]
    seconds = 10.0 if args.quick else args.seconds
    results: dict[str, Any] = {}
    for members in sizes:
        started = time.process_time()
        row: dict[str, Any] = {"propagation": propagation(members, args.seed, args.limit)}
        for loss in (float(v) for v in args.losses.split(",")):
            row[f"loss_{loss}"] = steady(members, loss, seconds, args.seed)
        row["sim_cpu_s"] = round(time.process_time() - started, 1)
        results[str(members)] = row
        print(f"\n== {members} members ==")
        for event, stats in row["propagation"].items():
            print(f"  {event:<6} known by every member: p50 {stats['p50']} s, "
                  f"p99 {stats['p99']} s, max {stats['max']} s ({stats['known_by']})")  # fmt: skip
        for key, stats in row.items():
            if key.startswith("loss_"):
                print(f"  {key}: {json.dumps(stats)}")
        print(f"  (simulation took {row['sim_cpu_s']} s of CPU)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
