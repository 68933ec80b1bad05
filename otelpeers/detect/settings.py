"""Detection configuration: the `detect:` section of the config file, validated strictly.

Every rule has the same base keys (enabled, severity, dedup_window_s, allow) and its own
parameters, each a typed field with its default here; config/otelpeers.yaml lists them all
and docs/configuration.md explains them. Unknown keys and wrong types are errors that name
the key (the loader in otelpeers.config builds these dataclasses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import ClassVar

SEVERITIES = ("low", "medium", "high", "critical")
# Why exfiltration.max_flows and volume_anomaly.max_open_flows are retired (RETIRED_KEYS: the
# loader warns when a file sets them).
_NO_FLOW_TABLE = ("each snapshot of an open connection carries the previous one's counters, "
                  "so the rule keeps no table of open connections")


class SettingsError(ValueError):
    """A bad value; the message names the key path and what would be accepted."""


def _check(ok: bool, path: str, why: str) -> None:
    if not ok:
        raise SettingsError(f"config: {path} {why}")


@dataclass(frozen=True)
class AllowConfig:
    """What a rule (or every rule, at detect.allow) never alerts on."""

    executables: tuple[str, ...] = ()  # executable names (basename), exact
    containers: tuple[str, ...] = ()  # container ids (a prefix of at least 12 characters)
    peer_cidrs: tuple[str, ...] = ()  # e.g. 10.0.0.0/8, 2001:db8::/32
    domain_suffixes: tuple[str, ...] = ()  # e.g. example.com (matches a.example.com too)

    def validate(self, path: str) -> None:
        for cidr in self.peer_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError(f"config: {path}.peer_cidrs: {cidr!r} is not a network "
                                    "such as 10.0.0.0/8 or 2001:db8::/32") from None
        for c in self.containers:
            _check(len(c) >= 12, f"{path}.containers",
                   f"entries must be container ids of at least 12 characters, got {c!r}")
        for d in self.domain_suffixes:
            _check(bool(d.strip(".")) and " " not in d, f"{path}.domain_suffixes",
                   f"entries must be domain names such as example.com, got {d!r}")


@dataclass(frozen=True)
class RuleBase:
    enabled: bool = True
    severity: str | None = None  # low | medium | high | critical; None: the rule's default
    dedup_window_s: float | None = None  # None: detect.dedup_window_s
    allow: AllowConfig = field(default_factory=AllowConfig)

    def validate(self, path: str) -> None:
        _check(self.severity is None or self.severity in SEVERITIES, f"{path}.severity",
               f"must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        _check(self.dedup_window_s is None or self.dedup_window_s >= 0,
               f"{path}.dedup_window_s", "must be >= 0")
        self.allow.validate(f"{path}.allow")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int | float) and not isinstance(v, bool):
                _check(v >= 0, f"{path}.{f.name}", f"must be >= 0, got {v}")


# ---- part 1: DNS rules ---------------------------------------------------------------------
@dataclass(frozen=True)
class DgaRule(RuleBase):
    # Mirrors otelpeers.detect.dga.actor.DgaActorConfig (a unit test keeps the defaults equal).
    window_s: float = 900.0  # an actor's lookups are weighed within this window of event time
    min_unique: int = 8  # new registered domains that ended NXDOMAIN, at least
    min_nxdomain_share: float = 0.75  # of the new registered domains
    min_high_unique: int = 10  # high-scoring NXDOMAIN domains that fire at any NXDOMAIN share
    min_evidence: float = 6.0  # summed per-name weights (see docs/detections.md)
    score_threshold: float = 0.0  # per-name model score; 0: the model's 1% FP threshold
    low_score: float = 0.1  # names scoring below this earn only the floor weight
    floor: float = 0.4  # weight of a new NXDOMAIN domain however ordinary its name looks
    answered_weight: float = 0.25  # weight of a new, answered but generated-looking domain
    tld_bonus: float = 0.15  # extra weight under TLDs the model leans on
    burst_s: float = 10.0  # failures are counted in intervals of this length ...
    burst_cap: int = 3  # ... and at most this many per interval earn the floor weight
    max_actors: int = 10_000
    max_names_per_actor: int = 512
    max_known_domains: int = 100_000  # registered domains known to exist (any actor)


@dataclass(frozen=True)
class DnsTunnelRule(RuleBase):
    half_life_s: float = 300.0  # an actor's evidence under one domain fades with this half-life
    min_bits: float = 16000.0  # weighed information (bits) under one domain needed to alert
    min_unique: int = 12  # unique names under the domain needed (unless answers alone do it)
    min_name_chars: int = 24  # shorter names are looked at only when answers carry data
    min_data_chars: int = 10  # characters left of the registered domain for a name to count
    short_query_bits: float = 150.0  # names averaging this many bits or fewer ...
    short_query_weight: float = 0.4  # ... count this much (anti-virus hash lookups)
    long_query_bits: float = 450.0  # names averaging this many bits or more count fully
    shared_actors: int = 2  # actors sending such names to a domain before it is scored down
    prevalence_weight: float = 0.5  # each further actor: evidence / (1 + weight * extra)
    service_weight: float = 0.1  # zones run by a listed CDN, cloud or reputation service
    sequence_boost: float = 1.5  # names numbered in sequence (chunk counters)
    max_channels: int = 20_000  # (actor, registered domain) pairs followed (LRU, counted)
    max_names_per_channel: int = 256  # recent names remembered per pair (repeats add nothing)
    max_domains: int = 20_000  # registered domains whose actors are counted (prevalence)
    max_actors_per_domain: int = 64

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.half_life_s > 0, f"{path}.half_life_s", "must be > 0")
        _check(self.long_query_bits > self.short_query_bits, f"{path}.long_query_bits",
               "must be greater than short_query_bits")
        _check(0 < self.short_query_weight <= 1, f"{path}.short_query_weight",
               "must be in (0, 1]")
        _check(0 < self.service_weight <= 1, f"{path}.service_weight", "must be in (0, 1]")
        for name in ("max_channels", "max_names_per_channel", "max_domains",
                     "max_actors_per_domain"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class FastFluxRule(RuleBase):
    window_s: float = 21600.0  # a name's resolutions are compared within this window
    min_resolutions: int = 4  # answered resolutions of the name needed
    min_networks: int = 6  # distinct /16 (IPv6 /32) networks among its answers needed
    max_ttl_s: float = 900.0  # answers with a longer TTL are not fast flux
    min_novelty: float = 0.5  # mean share of never-seen addresses in later resolutions
    shared_actors: int = 3  # actors resolving the name before it is scored down
    prevalence_weight: float = 0.25  # each further actor: evidence / (1 + weight * extra)
    service_weight: float = 0.2  # the chain ends under a listed CDN or cloud zone
    pool_suffixes: tuple[str, ...] = ("pool.ntp.org",)  # known round-robin pools
    pool_weight: float = 0.0  # names under pool_suffixes count this much (0: not at all)
    shared_names_boost: float = 1.25  # other names answered with the same addresses
    max_names: int = 50_000  # names followed (LRU, evictions counted)
    max_addresses_per_name: int = 64
    max_address_index: int = 100_000  # address -> names answered with it

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        _check(self.min_resolutions >= 1, f"{path}.min_resolutions", "must be >= 1")
        _check(self.min_networks >= 2, f"{path}.min_networks", "must be >= 2")
        _check(self.min_novelty <= 1, f"{path}.min_novelty", "must be in [0, 1]")
        _check(0 < self.service_weight <= 1, f"{path}.service_weight", "must be in (0, 1]")
        _check(self.pool_weight <= 1, f"{path}.pool_weight", "must be in [0, 1]")
        for d in self.pool_suffixes:
            _check(bool(d.strip(".")) and " " not in d, f"{path}.pool_suffixes",
                   f"entries must be domain names such as pool.ntp.org, got {d!r}")
        for name in ("max_names", "max_addresses_per_name", "max_address_index"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class DnsRedirectionChainRule(RuleBase):
    window_s: float = 86400.0  # a name's chains are compared within this window
    min_score: float = 3.0  # crossing score needed (about three unfamiliar domains)
    service_weight: float = 0.25  # a crossing into a listed CDN or cloud zone
    settle_s: float = 3600.0  # a domain in a name's chains for this long is familiar ...
    settled_weight: float = 0.25  # ... and counts this much
    named_weight: float = 0.5  # a hop named after the question's domain (customer naming)
    normal_hops: int = 4  # CNAME hops beyond this add long_weight each
    long_weight: float = 0.75
    shared_actors: int = 3  # actors resolving the name before it is scored down
    prevalence_weight: float = 0.5  # each further actor: score / (1 + weight * extra)
    max_names: int = 20_000  # names followed (LRU, evictions counted)
    max_domains_per_name: int = 16

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        _check(self.min_score > 0, f"{path}.min_score", "must be > 0")
        for name in ("service_weight", "settled_weight", "named_weight"):
            _check(getattr(self, name) <= 1, f"{path}.{name}", "must be in [0, 1]")
        for name in ("max_names", "max_domains_per_name"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


# ---- part 2: flow and process rules ----------------------------------------------------------
@dataclass(frozen=True)
class BeaconRule(RuleBase):
    min_beats: int = 12  # connections to one peer before the first decision
    ring_size: int = 48  # start times (and sizes) kept per (actor, peer)
    eval_every: int = 4  # new connections between decisions on one (actor, peer)
    min_period_s: float = 0.8  # shorter periods are loops or streams, not beacons
    max_period_s: float = 7200.0
    min_llr: float = 12.0  # evidence (nats): beacon model vs random arrivals
    max_jitter: float = 0.35  # fitted sd of a gap / period (50 % uniform jitter: 0.29)
    max_miss: float = 0.6  # fitted share of missed beats
    min_inliers: float = 0.75  # share of gaps near a multiple of the period
    max_beat_bytes: int = 1_000_000  # median bytes sent per beat above this: a transfer
    ignore_ports: tuple[int, ...] = (53, 123, 5353)  # DNS (the DNS rules), NTP clients
    prevalence_min_actors: int = 4  # a peer this many actors talk to ...
    prevalence_share: float = 0.05  # ... and this share of all actors seen is a shared service
    prevalence_warmup_s: float = 43200.0  # peers of 2+ actors wait this long into the input
    poller_min_peers: int = 4  # peers one actor polls on one port at one period: a poller
    max_pairs: int = 100_000  # (actor, peer) pairs followed (LRU, evictions counted)
    max_peers: int = 100_000  # peers whose actors are counted (prevalence)
    max_actors_per_peer: int = 256
    max_peers_per_actor: int = 64  # recent peers per actor looked at for polling

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.min_beats >= 4, f"{path}.min_beats", "must be >= 4")
        _check(self.ring_size >= self.min_beats, f"{path}.ring_size",
               "must be >= min_beats")
        _check(self.ring_size <= 1024, f"{path}.ring_size", "must be <= 1024")
        _check(self.eval_every >= 1, f"{path}.eval_every", "must be >= 1")
        _check(0 < self.min_period_s < self.max_period_s, f"{path}.min_period_s",
               "must be > 0 and below max_period_s")
        _check(0 < self.max_jitter <= 1, f"{path}.max_jitter", "must be in (0, 1]")
        for name in ("max_miss", "min_inliers", "prevalence_share"):
            _check(getattr(self, name) <= 1, f"{path}.{name}", "must be in [0, 1]")
        for p in self.ignore_ports:
            _check(0 <= p <= 65535, f"{path}.ignore_ports", f"entries must be ports, got {p}")
        for name in ("prevalence_min_actors", "poller_min_peers", "max_pairs", "max_peers",
                     "max_actors_per_peer", "max_peers_per_actor"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class PortScanRule(RuleBase):
    window_s: float = 3600.0  # probes of one actor count together within this window
    min_ports: int = 8  # vertical: distinct unanswered ports of one host
    min_hosts: int = 10  # horizontal: distinct unanswered hosts on one port
    min_unanswered_share: float = 0.25  # of the distinct targets in the window
    raw_min_targets: int = 8  # raw-socket TCP: distinct targets (replies are not visible)
    max_entries: int = 50_000  # (actor, host) and (actor, port) followed (LRU, counted)
    max_targets: int = 1024  # targets remembered per entry within the window
    evidence_targets: int = 20  # targets listed in the evidence

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        for name in ("min_ports", "min_hosts", "raw_min_targets"):
            _check(getattr(self, name) >= 2, f"{path}.{name}", "must be >= 2")
        _check(self.min_unanswered_share <= 1, f"{path}.min_unanswered_share",
               "must be in [0, 1]")
        for name in ("max_entries", "max_targets", "evidence_targets"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


ADMIN_PORTS = (22, 135, 445, 3389, 5985, 5986, 2375, 2376, 6443, 10250)


def _check_cidrs(cidrs: tuple[str, ...], path: str) -> None:
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise SettingsError(f"config: {path}: {cidr!r} is not a network such as "
                                "10.0.0.0/8 or 2001:db8::/32") from None


@dataclass(frozen=True)
class LateralMovementRule(RuleBase):
    admin_ports: tuple[int, ...] = ADMIN_PORTS  # remote-administration ports (TCP/UDP)
    internal_cidrs: tuple[str, ...] = ()  # internal besides RFC 1918 / RFC 4193
    window_s: float = 21600.0  # new contacts count together within this window
    min_hosts: int = 3  # new internal hosts in the window to alert
    broad_hosts: int = 5  # an actor that reached this many hosts while learning administers
    promote_days: int = 2  # a new (host, port) seen on this many days joins the baseline
    max_actors: int = 4096
    max_hosts_per_actor: int = 256  # baseline contacts (and pending ones) per actor

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(bool(self.admin_ports) and all(0 < p < 65536 for p in self.admin_ports),
               f"{path}.admin_ports", "must list ports 1-65535")
        _check_cidrs(self.internal_cidrs, f"{path}.internal_cidrs")
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        for name in ("min_hosts", "broad_hosts", "promote_days", "max_actors",
                     "max_hosts_per_actor"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


# Programs that read these files as their own credentials (such opens are no evidence):
# "EXE[,EXE...]:PATTERN[,PATTERN...]"; EXE is an executable name or glob (matched against the
# executable and the kernel's comm), a PATTERN with a "/" matches anywhere in the path (a
# relative path is read as if it began with "/"), one without is a basename, "*" any path.
_SSH_FILES = "/.ssh/,/etc/ssh/,id_rsa,id_dsa,id_ecdsa,id_ed25519,authorized_keys"
EXFILTRATION_TRUSTED_READERS: tuple[str, ...] = (
    "ssh,sshd,sshd-session,sshd-auth,ssh-agent,ssh-add,ssh-keygen,ssh-keyscan,sftp-server:"
    + _SSH_FILES,
    "sshd,sshd-session,sudo,su,login,passwd,unix_chkpwd,chage,chpasswd,useradd,usermod,"
    "userdel,groupadd,groupmod,gpasswd,newgrp,visudo,cron,crond,systemd,systemd-logind:"
    "/etc/shadow,/etc/gshadow,/etc/sudoers",
    "git,git-remote-http,git-remote-https,git-credential-*,gh:.git-credentials,.netrc",
    "curl,wget,python,python3*,pip,pip3,twine,uv,poetry:.netrc,.pypirc",
    "aws:/.aws/",
    "kubectl,kubelet,kubeadm,helm,k9s:/.kube/,kubeconfig,/etc/kubernetes/pki/",
    "docker,dockerd,containerd,podman,buildah,skopeo:/.docker/config.json",
    "node,npm,yarn,pnpm:.npmrc",
    "psql,pg_dump,pg_dumpall,pg_restore:.pgpass",
    "vault:.vault-token",
    "gpg,gpg2,gpg-agent:/.gnupg/",
    "firefox*,chrome,chromium*,google-chrome*,brave*,msedge:"
    "Cookies,cookies.sqlite,logins.json,key4.db,Login Data",
    "bash,zsh,fish:.bash_history",
    # Every in-cluster Kubernetes client reads its own service-account token.
    "*:/var/run/secrets/kubernetes.io/,/run/secrets/kubernetes.io/",
)


def parse_trusted_readers(entries: tuple[str, ...], path: str
                          ) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The entries as ((executable globs), (path patterns)) pairs; errors name the entry."""
    out = []
    for i, entry in enumerate(entries):
        exes, sep, pats = entry.partition(":")
        e = tuple(x.strip() for x in exes.split(",") if x.strip())
        p = tuple(x.strip() for x in pats.split(",") if x.strip())
        _check(bool(sep and e and p), f"{path}[{i}]",
               f"must be 'EXE[,EXE...]:PATTERN[,PATTERN...]' such as "
               f"'ssh,scp:/.ssh/,id_rsa', got {entry!r}")
        out.append((e, p))
    return tuple(out)


@dataclass(frozen=True)
class ExfiltrationRule(RuleBase):
    min_bytes: int = 65_536  # sent to one peer after the read, summed over its connections
    window_s: float = 300.0  # bytes count when sent (or their connection began) this soon
    trusted_readers: tuple[str, ...] = EXFILTRATION_TRUSTED_READERS
    # Reads by the parent, a child or a sibling (tar ~/.ssh | nc) count when this recent
    # (scored lower); 0: only the sending process's own reads.
    related_window_s: float = 30.0
    include_loopback: bool = False  # uploads to 127.0.0.0/8 and ::1 count too
    max_processes: int = 4096  # processes whose recent sensitive reads are remembered
    max_files_per_process: int = 8
    max_flows: int = 65_536  # retired (RETIRED_KEYS): accepted so that old files load
    max_known_peers: int = 65_536  # (binary, peer) pairs remembered, for "new peer"
    RETIRED_KEYS: ClassVar[Mapping[str, str]] = MappingProxyType({
        "max_flows": _NO_FLOW_TABLE})

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.min_bytes >= 1, f"{path}.min_bytes", "must be >= 1")
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        for name in ("max_processes", "max_files_per_process", "max_flows",
                     "max_known_peers"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")
        parse_trusted_readers(self.trusted_readers, f"{path}.trusted_readers")


@dataclass(frozen=True)
class ReverseShellRule(RuleBase):
    # Executable names of shells (the exec'd binary's basename or the comm).
    shells: tuple[str, ...] = (
        "sh", "bash", "rbash", "dash", "zsh", "ash", "ksh", "ksh93", "mksh", "pdksh", "oksh",
        "loksh", "yash", "posh", "fish", "tcsh", "csh", "pwsh", "elvish", "nu")
    multicall_binaries: tuple[str, ...] = ("busybox", "toybox")  # "busybox sh" is a shell
    # Processes that legitimately give shells a terminal or pipe (and may hold connections):
    # the walk up from a shell stops at the first of these.
    terminal_servers: tuple[str, ...] = (
        "sshd", "sshd-session", "sshd-auth", "tmux", "tmux: server", "screen", "SCREEN",
        "login", "agetty", "getty", "mingetty", "su", "sudo", "systemd", "init",
        "containerd-shim", "containerd-shim-runc-v2", "runc", "crun", "conmon", "dockerd",
        "containerd", "kubelet", "amazon-ssm-agent", "ssm-session-worker",
        "ssm-agent-worker", "gitlab-runner", "Runner.Worker", "Runner.Listener", "teleport",
        "tailscaled")
    max_depth: int = 4  # ancestors examined above a shell
    max_siblings: int = 8  # processes sharing the shell's parent examined (pipe to nc)
    max_fds: int = 64  # file descriptors examined per process
    recheck_s: float = 30.0  # a shell is re-examined when a process around it connects
    max_event_age_s: float = 10.0  # older exec events are not examined (not this host's now)
    max_shells: int = 4096  # live shells remembered
    max_inspections_per_s: float = 200.0  # /proc examinations, beyond: skipped and counted
    bind_shells: bool = True  # also alert when the shell's socket was accepted (inbound)

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(bool(self.shells), f"{path}.shells", "must name at least one shell")
        for name in ("max_depth", "max_fds", "max_shells"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")
        _check(self.max_inspections_per_s > 0, f"{path}.max_inspections_per_s", "must be > 0")


@dataclass(frozen=True)
class NovelPeerRule(RuleBase):
    max_new_peers_per_day: float = 4.0  # stability gate: new peers per day late in learning
    min_baseline_s: float = 14400.0  # the actor was observed this long while learning
    new_actor_learning_s: float = 86400.0  # actors first seen after learning learn this long
    promote_days: int = 2  # a new peer seen on this many days joins the baseline
    internal_peers: bool = False  # also judge internal peers (lateral_movement does)
    internal_cidrs: tuple[str, ...] = ()  # internal besides RFC 1918 / RFC 4193
    ipv4_prefix: int = 24  # unresolved peers: their network of this size
    ipv6_prefix: int = 48
    max_actors: int = 4096
    max_peers_per_actor: int = 128  # more while learning: not a stable baseline
    max_dns_join: int = 65_536  # (actor, address) -> domain, for flows nobody named

    def validate(self, path: str) -> None:
        super().validate(path)
        _check_cidrs(self.internal_cidrs, f"{path}.internal_cidrs")
        _check(8 <= self.ipv4_prefix <= 32, f"{path}.ipv4_prefix", "must be 8..32")
        _check(16 <= self.ipv6_prefix <= 128, f"{path}.ipv6_prefix", "must be 16..128")
        for name in ("promote_days", "max_actors", "max_peers_per_actor", "max_dns_join"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class VolumeAnomalyRule(RuleBase):
    window_s: float = 3600.0  # bytes to one peer are summed over this window
    min_bytes: int = 100_000_000  # never alert below this many bytes in a window
    min_ratio: float = 10.0  # ... nor below this multiple of the baseline reference
    reference_quantile: float = 0.95  # of the peer's past windows (few windows: their max)
    new_peer_quantile: float = 0.9  # of the actor's windows to all peers, for a new peer
    mad_k: float = 3.0  # the reference is at least median + mad_k x 1.4826 x MAD
    same_hour_factor: float = 2.0  # a new peer alerts only past this x the actor's largest
    # window to the same zone (internal/outside) opened at this hour of day (+-1 h)
    history_windows: int = 16  # past windows kept per (actor, peer)
    internal_peers: bool = True  # internal peers count too (a backup host is baselined)
    internal_cidrs: tuple[str, ...] = ()  # internal besides RFC 1918 / RFC 4193
    max_actors: int = 4096
    max_peers_per_actor: int = 64
    max_open_flows: int = 65_536  # retired (RETIRED_KEYS): accepted so that old files load
    max_dns_join: int = 65_536  # (actor, address) -> domain, for flows nobody named
    RETIRED_KEYS: ClassVar[Mapping[str, str]] = MappingProxyType({
        "max_open_flows": _NO_FLOW_TABLE})

    def validate(self, path: str) -> None:
        super().validate(path)
        _check_cidrs(self.internal_cidrs, f"{path}.internal_cidrs")
        _check(self.window_s > 0, f"{path}.window_s", "must be > 0")
        _check(self.min_bytes >= 1, f"{path}.min_bytes", "must be >= 1")
        _check(self.min_ratio >= 1, f"{path}.min_ratio", "must be >= 1")
        for name in ("reference_quantile", "new_peer_quantile"):
            _check(0 < getattr(self, name) <= 1, f"{path}.{name}", "must be in (0, 1]")
        for name in ("history_windows", "max_actors", "max_peers_per_actor",
                     "max_open_flows", "max_dns_join"):
            _check(getattr(self, name) >= 1, f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class RulesConfig:
    dga: DgaRule = field(default_factory=DgaRule)
    dns_tunnel: DnsTunnelRule = field(default_factory=DnsTunnelRule)
    fast_flux: FastFluxRule = field(default_factory=FastFluxRule)
    dns_redirection_chain: DnsRedirectionChainRule = field(
        default_factory=DnsRedirectionChainRule)
    beacon: BeaconRule = field(default_factory=BeaconRule)
    port_scan: PortScanRule = field(default_factory=PortScanRule)
    lateral_movement: LateralMovementRule = field(default_factory=LateralMovementRule)
    exfiltration: ExfiltrationRule = field(default_factory=ExfiltrationRule)
    reverse_shell: ReverseShellRule = field(default_factory=ReverseShellRule)
    novel_peer: NovelPeerRule = field(default_factory=NovelPeerRule)
    volume_anomaly: VolumeAnomalyRule = field(default_factory=VolumeAnomalyRule)


@dataclass(frozen=True)
class DetectConfig:
    enabled: bool = True
    dedup_window_s: float = 3600.0  # the same rule, actor and target alert once per window
    learning_period_s: float = 86400.0  # baseline rules learn this long (event time) first
    state_dir: str = "/var/lib/otelpeers/state"  # learned baselines survive restarts here
    max_actors: int = 10_000  # per rule, least recently seen evicted (counted)
    max_pending_span_events: int = 10_000  # detections waiting for their open flow to end
    # The live agent runs the rules in their own process (otelpeers.detect.remote), at a
    # lower priority, so that detection never slows the data plane.
    separate_process: bool = True
    nice: int = 19  # the detection process's niceness (0: same priority as the agent)
    max_judge_delay_s: float = 1.0  # a round's spans wait this long for its verdict at most
    max_backlog: int = 200_000  # inputs sent and not judged yet; beyond: not judged (counted)
    allow: AllowConfig = field(default_factory=AllowConfig)  # applies to every rule
    rules: RulesConfig = field(default_factory=RulesConfig)

    def validate(self) -> None:
        _check(self.dedup_window_s >= 0, "detect.dedup_window_s", "must be >= 0")
        _check(self.learning_period_s >= 0, "detect.learning_period_s", "must be >= 0")
        _check(self.state_dir.startswith("/"), "detect.state_dir", "must be an absolute path")
        _check(self.max_actors >= 1, "detect.max_actors", "must be >= 1")
        _check(self.max_pending_span_events >= 1, "detect.max_pending_span_events",
               "must be >= 1")
        _check(0 <= self.nice <= 19, "detect.nice", "must be between 0 and 19")
        _check(self.max_judge_delay_s >= 0, "detect.max_judge_delay_s", "must be >= 0")
        _check(self.max_backlog >= 1, "detect.max_backlog", "must be >= 1")
        self.allow.validate("detect.allow")
        for f in fields(self.rules):
            getattr(self.rules, f.name).validate(f"detect.rules.{f.name}")
