"""The list of rules the engine runs (in this order)."""

from __future__ import annotations

from otelpeers.detect.engine import Rule
from otelpeers.detect.rules.beacon import Beacon
from otelpeers.detect.rules.dga import Dga
from otelpeers.detect.rules.dns_redirection_chain import DnsRedirectionChain
from otelpeers.detect.rules.dns_tunnel import DnsTunnel
from otelpeers.detect.rules.exfiltration import Exfiltration
from otelpeers.detect.rules.fast_flux import FastFlux
from otelpeers.detect.rules.lateral_movement import LateralMovement
from otelpeers.detect.rules.novel_peer import NovelPeer
from otelpeers.detect.rules.port_scan import PortScan
from otelpeers.detect.rules.reverse_shell import ReverseShell
from otelpeers.detect.rules.volume_anomaly import VolumeAnomaly

RULES: list[type[Rule]] = [
    Dga,
    DnsTunnel,
    FastFlux,
    DnsRedirectionChain,
    Beacon,
    PortScan,
    LateralMovement,
    Exfiltration,
    ReverseShell,
    NovelPeer,
    VolumeAnomaly,
]
