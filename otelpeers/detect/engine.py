"""The detection engine every rule shares, and its pipeline stage.

    Outputs of a round (flows, progress, DNS lookups, process events)
        -> actor of each input (process: executable + container; Zeek: source address)
        -> allow lists (global and per rule) -> each enabled rule that takes that input
        -> Findings -> deduplication (rule, actor, target, window) -> Detections
        -> span events on the evidence span (this round's flow or lookup, or the open flow
           when it ends) and Outputs.detections (log records, counter, files, live view)

Rules are small classes (otelpeers.detect.rules) that keep bounded state per actor, in event
time; they never see an input an allow list removes. The engine is pure apart from the
clock of its inputs: the live agent, `otelpeers detect` over recordings and over Zeek logs
all run it the same way.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from otelpeers.detect.model import (
    Actor,
    ActorKind,
    Detection,
    EvidenceKind,
    EvidenceRef,
    EvidenceValue,
    Peer,
    RuleMeta,
    Severity,
)
from otelpeers.detect.settings import AllowConfig, DetectConfig, RuleBase
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import Owner, ProcessEvent
from otelpeers.flows import FlowRecord
from otelpeers.pipeline import BaseStage, Outputs

log = logging.getLogger(__name__)

NS = 1_000_000_000
PENDING_MAX_AGE_NS = 3600 * NS  # a detection waits this long for its flow's span at most
K = TypeVar("K")
V = TypeVar("V")


# ---- what rules return and get --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict; the engine turns it into a Detection (metadata, id, dedup)."""

    actor: Actor
    time_ns: int  # event time of the input that completed the evidence
    score: float  # 0..1
    summary: str
    peer: Peer | None = None
    evidence: Mapping[str, EvidenceValue] = field(default_factory=dict)
    evidence_span: EvidenceRef | None = None
    severity: Severity | None = None  # None: the rule's configured or default severity
    target: str | None = None  # dedup target when not the peer (e.g. a registered domain)


class BoundedMap(OrderedDict[K, V], Generic[K, V]):
    """An LRU dict that counts what it evicts (exported as <rule>.state_evicted)."""

    def __init__(self, maxsize: int, on_evict: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._on_evict = on_evict

    def touch(self, key: K, default: Callable[[], V]) -> V:
        """The value for key, created with default() when missing; most recently used."""
        v = self.get(key)
        if v is None:
            v = default()
            self.put(key, v)
        else:
            self.move_to_end(key)
        return v

    def put(self, key: K, value: V) -> None:
        """Set key (most recently used), evicting the least recently used beyond maxsize."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict()


@dataclass
class RuleContext:
    """What the engine gives every rule: its settings, bounded state, learning clock."""

    config: DetectConfig
    learning_start_ns: int | None = None  # first event time seen (offline) / baseline birth
    stats: dict[str, int] = field(default_factory=dict)
    live: bool = False  # the live agent on this host (else a recording or logs): /proc is ours

    def learning(self, now_ns: int) -> bool:
        """True while baseline rules learn (the first learning_period_s of event time)."""
        if self.learning_start_ns is None:
            return True
        return now_ns - self.learning_start_ns < self.config.learning_period_s * NS

    def bounded(self, name: str, maxsize: int | None = None) -> BoundedMap[Any, Any]:
        key = f"{name}.state_evicted"
        self.stats.setdefault(key, 0)

        def evicted() -> None:
            self.stats[key] += 1

        return BoundedMap(maxsize or self.config.max_actors, evicted)


class Rule:
    """Base class of a rule: override the inputs it looks at. Each on_* returns findings
    (usually none). Inputs reach a rule only after allow lists, with their actor."""

    meta: ClassVar[RuleMeta]
    settings_type: ClassVar[type[RuleBase]] = RuleBase
    takes_flows: ClassVar[bool] = False
    takes_progress: ClassVar[bool] = False
    takes_dns: ClassVar[bool] = False
    takes_process: ClassVar[bool] = False

    def __init__(self, settings: RuleBase, ctx: RuleContext) -> None:
        self.settings = settings
        self.ctx = ctx

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return ()

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return ()

    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        return ()

    def on_process(self, actor: Actor, ev: ProcessEvent) -> Iterable[Finding]:
        return ()

    def tick(self, now_ns: int) -> Iterable[Finding]:
        return ()

    def counters(self) -> Mapping[str, int]:
        return {}

    # Baseline rules persist what they learned (a small JSON-able dict), see BaselineStore.
    def save_state(self) -> dict[str, Any] | None:
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        pass


# ---- actors ----------------------------------------------------------------------------------
ProcessDescriber = Callable[[int], tuple[str | None, str | None] | None]  # tgid -> (exe, cid)


class Actors:
    """Who an input is about. Live: the owning process, keyed by executable and container so
    that a restarted process keeps its history; Zeek: the source address."""

    MAX_CACHED = 8192

    def __init__(self, describe: ProcessDescriber | None = None, *,
                 describe_owner: Callable[[Owner], tuple[str | None, str | None] | None]
                 | None = None) -> None:
        """describe: tgid -> (executable, container id) from the process table;
        describe_owner: the same from the owner (tgid and comm: a process that exec'ed since
        is another one), where the table is in another process (detect/remote.py)."""
        self._describe = describe
        self._describe_owner = describe_owner
        # (tgid, comm) or an address -> Actor: every flow of a process reuses one Actor.
        # Only processes the table has described are cached, so one seen before its /proc
        # read is keyed by its executable, not its comm, once known.
        self._cache: dict[object, Actor] = {}

    def _remember(self, key: object, actor: Actor) -> Actor:
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()  # cheap and bounded; the next inputs fill it again
        self._cache[key] = actor
        return actor

    def of_owner(self, owner: Owner | None, local_addr: str = "",
                 local_port: int = 0) -> Actor | None:
        if owner is None:
            if not local_addr:
                return None
            actor = self._cache.get(local_addr)
            if actor is None:
                actor = self._remember(local_addr, Actor(
                    ActorKind.ADDRESS, local_addr, address=local_addr, port=local_port or None))
            return actor
        ckey = (owner.tgid, owner.comm)
        actor = self._cache.get(ckey)
        if actor is not None:
            return actor
        exe = cid = None
        described = (self._describe_owner(owner) if self._describe_owner is not None
                     else self._describe(owner.tgid) if self._describe is not None else None)
        if described is not None:
            exe, cid = described
        exe = exe or owner.comm or "unknown"
        key = f"{exe}@{cid[:12]}" if cid else exe
        actor = Actor(ActorKind.PROCESS, key, executable=exe, container_id=cid,
                      pid=owner.tgid, owner=owner)
        knows = self._describe is not None or self._describe_owner is not None
        return self._remember(ckey, actor) if described is not None or not knows else actor

    def of_flow(self, r: FlowRecord) -> Actor | None:
        if r.owner is not None and r.owner.is_kernel:
            # The kernel's own replies (resets, ICMP errors, echo replies) act for no
            # process: a host pinged every 10 s by its monitoring is not a beacon.
            return None
        # Zeek rows carry no owner: the actor is the connection's originator.
        return self.of_owner(r.owner, r.local_addr, 0)

    def of_lookup(self, lk: DnsLookup) -> Actor | None:
        return self.of_owner(lk.txn.owner, lk.txn.client_addr, 0)

    def of_process(self, ev: ProcessEvent) -> Actor | None:
        return self.of_owner(Owner(ev.tgid, ev.pid, ev.uid, ev.gid, ev.cgroup_id, ev.comm))


# ---- allow lists ------------------------------------------------------------------------------
class Allow:
    """One rule's allow list merged with the global one."""

    def __init__(self, *configs: AllowConfig) -> None:
        self.executables = frozenset(e for c in configs for e in c.executables)
        self.containers = tuple(c for cfg in configs for c in cfg.containers)
        self.networks = tuple(ipaddress.ip_network(n, strict=False)
                              for c in configs for n in c.peer_cidrs)
        self.suffixes = tuple(d.strip(".").lower() for c in configs for d in c.domain_suffixes)
        self.active = bool(self.executables or self.containers or self.networks
                           or self.suffixes)

    def actor(self, a: Actor) -> bool:
        if a.executable is not None and a.executable in self.executables:
            return True
        cid = a.container_id
        return bool(cid and any(cid.startswith(c) for c in self.containers))

    def address(self, addr: str) -> bool:
        if not self.networks or not addr:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def domain(self, name: str) -> bool:
        if not self.suffixes or not name:
            return False
        n = name.rstrip(".").lower()
        return any(n == s or n.endswith("." + s) for s in self.suffixes)

    def flow(self, r: FlowRecord) -> bool:
        if self.address(r.peer_addr):
            return True
        return r.dns is not None and self.domain(r.dns.question_name)

    def lookup(self, lk: DnsLookup) -> bool:
        return self.domain(lk.txn.question_name) or self.address(lk.txn.resolver_addr)


# ---- the engine --------------------------------------------------------------------------------
@dataclass(slots=True)
class _Seen:
    last_ns: int
    suppressed: int = 0


class Engine:
    """Runs the enabled rules over a round's outputs; see the module docstring."""

    def __init__(self, config: DetectConfig, rules: Sequence[type[Rule]], *,
                 actors: Actors | None = None, ctx: RuleContext | None = None) -> None:
        self.config = config
        self.ctx = ctx if ctx is not None else RuleContext(config)
        self.actors = actors if actors is not None else Actors()
        self.rules: list[tuple[Rule, Allow]] = []
        self.stats = {"detections": 0, "suppressed": 0, "allowed": 0, "rule_errors": 0,
                      "rules_not_started": 0}
        for cls in rules:
            settings = getattr(config.rules, cls.meta.name)
            if not settings.enabled:
                continue
            try:
                rule = cls(settings, self.ctx)
            except Exception as exc:  # e.g. a model file missing: the agent runs on
                self.stats["rules_not_started"] += 1
                log.error("detection rule %s cannot start and is off: %s", cls.meta.name, exc)
                continue
            self.rules.append((rule, Allow(config.allow, settings.allow)))
        self._flow_rules = [(r, a) for r, a in self.rules if r.takes_flows]
        self._progress_rules = [(r, a) for r, a in self.rules if r.takes_progress]
        self._dns_rules = [(r, a) for r, a in self.rules if r.takes_dns]
        self._process_rules = [(r, a) for r, a in self.rules if r.takes_process]
        self._seen: BoundedMap[tuple[str, str, str], _Seen] = self.ctx.bounded(
            "dedup", max(config.max_actors * 4, 1024))

    @property
    def rule_names(self) -> list[str]:
        return [r.meta.name for r, _ in self.rules]

    def evaluate(self, out: Outputs) -> list[Detection]:
        """Every rule over this round's inputs; returns the detections (deduplicated).

        The hot path: every completed flow passes here. Per input, one actor lookup (cached);
        per rule, one method call, and allow checks only for rules that have allow lists."""
        found: list[tuple[Rule, Finding]] = []
        if self.ctx.learning_start_ns is None:
            self._note_first_time(out)
        actors = self.actors
        if self._process_rules:
            for ev in out.process:
                actor = actors.of_process(ev)
                if actor is not None:
                    self._run(self._process_rules, "on_process", actor, ev, found, None)
        if self._dns_rules:
            for lk in out.dns:
                actor = actors.of_lookup(lk)
                if actor is not None:
                    self._run(self._dns_rules, "on_dns", actor, lk, found, Allow.lookup)
        if self._progress_rules:
            for f in out.progress:
                actor = actors.of_flow(f)
                if actor is not None:
                    self._run(self._progress_rules, "on_progress", actor, f, found, Allow.flow)
        if self._flow_rules:
            for f in out.flows:
                actor = actors.of_flow(f)
                if actor is not None:
                    self._run(self._flow_rules, "on_flow", actor, f, found, Allow.flow)
        return self._emit(found) if found else []

    def tick(self, now_ns: int) -> list[Detection]:
        found: list[tuple[Rule, Finding]] = []
        for rule, _ in self.rules:
            try:
                found.extend((rule, f) for f in rule.tick(now_ns))
            except Exception:
                self._rule_failed(rule)
        return self._emit(found)

    def _note_first_time(self, out: Outputs) -> None:
        times = [t for t in (*(ev.time_ns for ev in out.process[:1]),
                             *(lk.txn.end_ns for lk in out.dns[:1]),
                             *(f.start_ns for f in out.flows[:1])) if t > 0]
        if times:
            self.ctx.learning_start_ns = min(times)

    def _run(self, rules: list[tuple[Rule, Allow]], method: str, actor: Actor, item: Any,
             found: list[tuple[Rule, Finding]],
             allowed: Callable[[Allow, Any], bool] | None) -> None:
        for rule, allow in rules:
            if allow.active and (allow.actor(actor) or (allowed is not None
                                                        and allowed(allow, item))):
                self.stats["allowed"] += 1
                continue
            try:
                result = getattr(rule, method)(actor, item)
                if result:
                    found.extend((rule, f) for f in result)
            except Exception:  # one broken rule must not stop the others or the agent
                self._rule_failed(rule)

    def _rule_failed(self, rule: Rule) -> None:
        self.stats["rule_errors"] += 1
        log.exception("detection rule %s failed", rule.meta.name)

    def _emit(self, found: list[tuple[Rule, Finding]]) -> list[Detection]:
        out = []
        for rule, f in found:
            settings = rule.settings
            target = f.target or (f.peer.key if f.peer is not None else "")
            window = (settings.dedup_window_s if settings.dedup_window_s is not None
                      else self.config.dedup_window_s) * NS
            key = (rule.meta.name, f.actor.key, target)
            seen = self._seen.get(key)
            if seen is not None and f.time_ns - seen.last_ns < window:
                seen.suppressed += 1
                self.stats["suppressed"] += 1
                continue
            repeats = seen.suppressed if seen is not None else 0
            self._seen.put(key, _Seen(f.time_ns))
            severity = f.severity or (Severity.parse(settings.severity) if settings.severity
                                      else rule.meta.severity)
            out.append(Detection(
                rule=rule.meta, time_ns=f.time_ns, score=min(1.0, max(0.0, float(f.score))),
                severity=severity, summary=f.summary, actor=f.actor, peer=f.peer,
                evidence=dict(f.evidence), evidence_span=f.evidence_span, repeats=repeats))
            self.stats["detections"] += 1
        return out

    def counters(self) -> dict[str, int]:
        out = {**self.stats, **self.ctx.stats}
        for rule, _ in self.rules:
            out.update({f"{rule.meta.name}.{k}": int(v) for k, v in rule.counters().items()})
        # One total of everything any bounded table evicted (dashboards alert on it).
        out["state_evicted"] = sum(v for k, v in out.items() if k.endswith("state_evicted")
                                   or k.endswith("_evicted"))
        return out


# ---- the pipeline stage -------------------------------------------------------------------------
class SpanEvents:
    """Puts each detection on its evidence span: this round's flow or DNS lookup, or the
    flow's span when it ends (the flow is still open, or not announced yet). Waiting
    detections are bounded in number and aged out after PENDING_MAX_AGE_NS of event time."""

    def __init__(self, ctx: RuleContext, maxsize: int) -> None:
        # flow id -> detections waiting for the flow's span
        self._pending: BoundedMap[str, tuple[Detection, ...]] = ctx.bounded(
            "pending_span_events", maxsize)
        self.expired = 0

    def __len__(self) -> int:
        return len(self._pending)

    def expire(self, now_ns: int) -> None:
        while self._pending:  # oldest first (insertion order)
            fid, ds = next(iter(self._pending.items()))
            if now_ns - ds[0].time_ns < PENDING_MAX_AGE_NS:
                break
            del self._pending[fid]
            self.expired += 1

    def attach(self, out: Outputs, detections: Sequence[Detection]) -> None:
        """detections (found this round) onto out.flows / out.dns, or pending."""
        if not detections and not self._pending:
            return
        by_flow: dict[str, list[Detection]] = {}
        by_txn: dict[str, list[Detection]] = {}
        for d in detections:
            ref = d.evidence_span
            if ref is None:
                continue
            (by_flow if ref.kind == EvidenceKind.FLOW else by_txn).setdefault(
                ref.ident, []).append(d)
        if by_txn:
            out.dns = [replace(lk, detections=lk.detections + tuple(by_txn[lk.txn.txn_id]))
                       if lk.txn.txn_id in by_txn else lk for lk in out.dns]
        done_ids = {r.flow_id for r in out.flows}
        for fid, ds in by_flow.items():
            # Still open, or not announced yet (a rule that saw the process before its
            # connection): the span is exported when the flow ends; wait for it, bounded.
            # A flow that ended in an earlier round was exported already, and its pending
            # entry ages out; the log record still points at the span.
            if fid not in done_ids:
                self._pending.put(fid, self._pending.get(fid, ()) + tuple(ds))
        if self._pending or by_flow:
            flows = []
            for r in out.flows:
                extra = tuple(by_flow.get(r.flow_id, ())) + self._pending.pop(r.flow_id, ())
                flows.append(replace(r, detections=r.detections + extra) if extra else r)
            out.flows = flows


class DetectStage(BaseStage):
    """Runs the engine in the pipeline's process() step, after DNS and process annotation,
    so rules see named flows with their files; attaches each detection to its evidence
    span before the span sink exports it."""

    name: ClassVar[str] = "detect"
    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, engine: Engine, *, store: Any = None) -> None:
        self.engine = engine
        self.store = store  # BaselineStore, live only
        self.span_events = SpanEvents(engine.ctx, engine.config.max_pending_span_events)

    def tick(self, now_ns: int, out: Outputs) -> None:
        out.detections.extend(self.engine.tick(now_ns))
        self.span_events.expire(now_ns)
        if self.store is not None:
            self.store.maybe_save(now_ns)

    def process(self, out: Outputs) -> None:
        new = self.engine.evaluate(out)
        if new:
            out.detections.extend(new)
        self.span_events.attach(out, out.detections)

    def finish(self, now_ns: int, out: Outputs) -> None:
        out.detections.extend(self.engine.tick(now_ns))
        if self.store is not None:
            self.store.save()

    def counters(self) -> Mapping[str, int]:
        return {**self.engine.counters(), "span_events_pending": len(self.span_events),
                "pending_span_events_expired": self.span_events.expired}


def settings_defaults(cls: type[RuleBase]) -> dict[str, Any]:
    """The defaults of a rule's settings (for docs and tests)."""
    return {f.name: f.default for f in fields(cls) if f.name != "allow"}
