"""Fixed metadata of every rule: the same uuid across runs and versions (never change one;
bump version when a rule's logic changes)."""

from __future__ import annotations

from otelpeers.detect.model import RuleMeta, Severity

_ATTACK = "https://attack.mitre.org/techniques/"

DGA = RuleMeta(
    name="dga", category="command_and_control",
    uuid="462de7d2-329a-4ba4-b79b-8856ff35713f", version="1.0.0",
    description="A process resolves many new, algorithmically generated looking names under "
                "different registered domains, most of which do not exist (NXDOMAIN).",
    reference=_ATTACK + "T1568/002/", severity=Severity.HIGH)
DNS_TUNNEL = RuleMeta(
    name="dns_tunnel", category="command_and_control",
    uuid="68739608-c86e-469f-8f03-91802c1ffe98", version="1.0.0",
    description="DNS used as a data channel: many unique, long, high-entropy labels under one "
                "registered domain, or answers carrying data.",
    reference=_ATTACK + "T1071/004/", severity=Severity.HIGH)
FAST_FLUX = RuleMeta(
    name="fast_flux", category="command_and_control",
    uuid="ac1b2e2d-02fc-4997-8c1f-c90caa03ff15", version="1.0.0",
    description="A name whose answers spread over many networks with short TTLs across "
                "resolutions.",
    reference=_ATTACK + "T1568/001/", severity=Severity.MEDIUM)
DNS_REDIRECTION_CHAIN = RuleMeta(
    name="dns_redirection_chain", category="command_and_control",
    uuid="206d9292-313c-4f81-919b-3ea9a42abb95", version="1.0.0",
    description="CNAME chains that cross several registered domains, are unusually long, or "
                "change often for the same name.",
    reference=_ATTACK + "T1568/", severity=Severity.MEDIUM)
BEACON = RuleMeta(
    name="beacon", category="command_and_control",
    uuid="eabe3afc-de80-4aa8-90f8-56738d4a7278", version="1.0.0",
    description="An actor connects to the same peer at regular intervals (command and "
                "control beaconing), also when the attempts fail.",
    reference=_ATTACK + "T1071/", severity=Severity.HIGH)
PORT_SCAN = RuleMeta(
    name="port_scan", category="discovery",
    uuid="eff92ce7-c408-45a9-9835-b8d5639bcb75", version="1.0.0",
    description="One actor probes many ports of a host, or one port of many hosts, and a "
                "substantial share does not answer.",
    reference=_ATTACK + "T1046/", severity=Severity.MEDIUM)
LATERAL_MOVEMENT = RuleMeta(
    name="lateral_movement", category="lateral_movement",
    uuid="8bf15b49-59c7-40ae-88e2-a7ac62934315", version="1.0.0",
    description="An actor newly reaches several internal hosts on remote-administration "
                "ports it has not used before.",
    reference=_ATTACK + "T1021/", severity=Severity.HIGH)
EXFILTRATION = RuleMeta(
    name="exfiltration", category="exfiltration",
    uuid="98819709-4e2c-4d3d-ac10-19ac2435b61d", version="1.0.0",
    description="A process read a sensitive file, then sent data to a peer.",
    reference=_ATTACK + "T1041/", severity=Severity.HIGH)
REVERSE_SHELL = RuleMeta(
    name="reverse_shell", category="execution",
    uuid="1931d8d8-e29c-4ace-8857-0e0200425a69", version="1.0.0",
    description="A shell whose input and output is a network connection, directly or "
                "through the terminal or pipe of the process holding the connection.",
    reference=_ATTACK + "T1059/004/", severity=Severity.CRITICAL)
NOVEL_PEER = RuleMeta(
    name="novel_peer", category="command_and_control",
    uuid="4cb99a02-da9c-45d8-beea-b9abb58b8328", version="1.0.0",
    description="A binary talks to a peer (registered domain or network) outside the "
                "baseline it learned.",
    reference=_ATTACK + "T1071/", severity=Severity.LOW)
VOLUME_ANOMALY = RuleMeta(
    name="volume_anomaly", category="exfiltration",
    uuid="f73ecc8d-9ccf-4fed-95ce-eff4e621d9b4", version="1.0.0",
    description="Bytes from an actor to one peer within a window far above the actor's "
                "learned baseline.",
    reference=_ATTACK + "T1048/", severity=Severity.MEDIUM)

ALL = (DGA, DNS_TUNNEL, FAST_FLUX, DNS_REDIRECTION_CHAIN, BEACON, PORT_SCAN, LATERAL_MOVEMENT,
       EXFILTRATION, REVERSE_SHELL, NOVEL_PEER, VOLUME_ANOMALY)
