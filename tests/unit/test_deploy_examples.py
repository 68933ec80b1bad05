"""examples/compose and examples/kubernetes, checked statically (no container runtime here).

They parse; every local file they reference exists; ports and service names agree between
the compose file, the collector config, the stores' configs and Grafana's datasource
provisioning; the agent configs validate with the agent's own parser; the Kubernetes
manifests validate against the Kubernetes API schemas (kubernetes-validate, strict: an
unknown field is an error); the DaemonSet gives the agent what it needs (host PID and
network, capabilities instead of privileged, the mounts, the node name).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grafana_dashboard as g
import kubernetes_validate
import pytest
import yaml

from otelpeers.config import load_config, parse_config

REPO = g.REPO
COMPOSE_DIR = REPO / "examples" / "compose"
K8S_DIR = REPO / "examples" / "kubernetes"
PROVISIONING = REPO / "examples" / "grafana" / "provisioning"
AGENT_MOUNTS = {"/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/fs/bpf", "/lib/modules",
                "/usr/src"}
CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def port_of(endpoint: str) -> int:
    """'0.0.0.0:4317', 'tempo:4317', 'http://loki:3100/otlp' -> the port."""
    if "://" not in endpoint:
        endpoint = "//" + endpoint
    port = urlsplit(endpoint).port
    assert port is not None, f"no port in {endpoint!r}"
    return port


# ---- docker compose ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_DIR / "docker-compose.yaml")


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative paths resolved against the compose dir)."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith((".", "/")):
            out[dst] = str((COMPOSE_DIR / src).resolve()) if src.startswith(".") else src
        else:
            out[dst] = f"volume:{src}"
    return out


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port; every port must be published on 127.0.0.1 only."""
    out = {}
    for p in service.get("ports", []):
        ip, host, container = str(p).split(":")
        assert ip == "127.0.0.1", f"port {p} is published beyond loopback"
        out[int(container)] = int(host)
    return out


def service_config(compose: dict[str, Any], service: str, container_path: str) -> Any:
    return load_yaml(Path(bind_mounts(compose["services"][service])[container_path]))


def test_compose_services_and_local_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"otelpeers", "otel-collector", "prometheus", "tempo", "loki",
                             "grafana"}
    for name, svc in services.items():
        assert "image" in svc, f"{name} has no image"
        for dst, src in bind_mounts(svc).items():
            if src.startswith(str(REPO)):
                assert Path(src).exists(), f"{name}: {src} (mounted at {dst}) does not exist"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in (s for s in bind_mounts(svc).values() if s.startswith("volume:")):
            assert vol.removeprefix("volume:") in compose.get("volumes", {}), vol
    build = services["otelpeers"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == REPO and dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (context / src).exists(), f"Dockerfile copies missing {src}"


def test_compose_agent_sees_the_host(compose: dict[str, Any]) -> None:
    agent = compose["services"]["otelpeers"]
    assert agent["privileged"] is True
    assert agent["pid"] == "host" and agent["network_mode"] == "host"
    assert agent["cgroup"] == "host"
    mounts = bind_mounts(agent)
    assert set(mounts) >= AGENT_MOUNTS, AGENT_MOUNTS - set(mounts)
    for path in AGENT_MOUNTS:
        assert mounts[path] == path, f"{path} must be the host's own {path}"
    args = agent["command"]
    config_path = args[args.index("--config") + 1]
    cfg = load_config(mounts[config_path])
    assert mounts[str(Path(cfg.export.files.directory))].startswith("volume:")
    assert str(Path(cfg.graph.socket_path).parent) in mounts


def test_compose_ports_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # agent -> collector: the agent (host network) sends to the collector's published port.
    agent = services["otelpeers"]
    args = agent["command"]
    cfg = load_config(bind_mounts(agent)[args[args.index("--config") + 1]])
    endpoint = urlsplit(cfg.export.otlp.endpoint)
    assert endpoint.hostname == "127.0.0.1"
    collector = service_config(compose, "otel-collector", "/etc/otelcol/config.yaml")
    protocol = "grpc" if cfg.export.otlp.protocol == "grpc" else "http"
    receiver_port = port_of(collector["receivers"]["otlp"]["protocols"][protocol]["endpoint"])
    assert published(services["otel-collector"])[receiver_port] == endpoint.port

    # collector -> stores: each exporter names a compose service on the port it listens on.
    tempo = service_config(compose, "tempo", "/etc/tempo/tempo.yaml")
    loki = service_config(compose, "loki", "/etc/loki/loki.yaml")
    prom_args = services["prometheus"]["command"]
    assert "--web.enable-otlp-receiver" in prom_args
    assert "--enable-feature=exemplar-storage" in prom_args
    prom_port = 9090  # Prometheus' default; no --web.listen-address given
    assert not any(a.startswith("--web.listen-address") for a in prom_args)
    tempo_otlp = port_of(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]
                         ["endpoint"])
    expected = {
        "otlp/tempo": ("tempo", tempo_otlp, ""),
        "otlphttp/prometheus": ("prometheus", prom_port, "/api/v1/otlp"),
        "otlphttp/loki": ("loki", loki["server"]["http_listen_port"], "/otlp"),
    }
    assert set(collector["exporters"]) == set(expected)
    for name, (service, port, path) in expected.items():
        url = collector["exporters"][name]["endpoint"]
        parts = urlsplit(url if "://" in url else "//" + url)
        assert (parts.hostname, parts.port, parts.path) == (service, port, path), name

    # Grafana -> stores: each datasource URL is a compose service on its HTTP port.
    http_ports = {"prometheus": prom_port, "tempo": tempo["server"]["http_listen_port"],
                  "loki": loki["server"]["http_listen_port"]}
    datasources = load_yaml(PROVISIONING / "datasources" / "otelpeers.yaml")["datasources"]
    for ds in datasources:
        url = urlsplit(ds["url"])
        assert url.hostname in http_ports, f"{ds['name']}: {url.hostname} is no compose service"
        assert url.port == http_ports[url.hostname], ds["name"]
        assert published(services[url.hostname]).get(url.port), f"{url.hostname} unpublished"


def test_collector_config_pipelines_are_complete(compose: dict[str, Any]) -> None:
    doc = service_config(compose, "otel-collector", "/etc/otelcol/config.yaml")
    pipelines = doc["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe[kind]:
                assert comp in doc[kind], f"pipeline {name} uses undefined {comp}"
        assert pipe["processors"][0] == "memory_limiter"
    used = {c for p in pipelines.values() for c in p["exporters"]}
    assert used == set(doc["exporters"]), "every exporter is used"


def test_prometheus_labels_series_with_the_host(compose: dict[str, Any]) -> None:
    prom = service_config(compose, "prometheus", "/etc/prometheus/prometheus.yml")
    assert "host.name" in prom["otlp"]["promote_resource_attributes"]
    # ... which is the label the dashboard's Host variable filters on.
    assert all('host_name=~"$host"' in q.text for q in g.metric_queries(g.load()))


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    for kind in ("datasources", "dashboards"):
        assert mounts[f"/etc/grafana/provisioning/{kind}"] == str(PROVISIONING / kind)
    provider = load_yaml(PROVISIONING / "dashboards" / "otelpeers.yaml")["providers"][0]
    assert provider["type"] == "file"
    in_provider = [dst for dst, src in mounts.items() if src == str(g.DASHBOARD)]
    assert [str(Path(p).parent) for p in in_provider] == [provider["options"]["path"]]

    datasources = load_yaml(PROVISIONING / "datasources" / "otelpeers.yaml")["datasources"]
    by_type = {ds["type"]: ds for ds in datasources}
    assert len(by_type) == len(datasources)
    # One datasource for each of the dashboard's datasource variables; the metrics one is
    # the default, which the DS_PROMETHEUS variable then selects.
    assert set(by_type) == set(g.DATASOURCE_VARIABLES.values())
    assert by_type["prometheus"]["isDefault"] is True
    uids = {t: ds["uid"] for t, ds in by_type.items()}
    prom, tempo, loki = (by_type[t]["jsonData"] for t in ("prometheus", "tempo", "loki"))
    assert [d["datasourceUid"] for d in prom["exemplarTraceIdDestinations"]] == [uids["tempo"]]
    assert prom["exemplarTraceIdDestinations"][0]["name"] == "trace_id"
    assert tempo["tracesToLogsV2"]["datasourceUid"] == uids["loki"]
    assert tempo["tracesToMetrics"]["datasourceUid"] == uids["prometheus"]
    assert tempo["serviceMap"]["datasourceUid"] == uids["prometheus"]
    assert [d["datasourceUid"] for d in loki["derivedFields"]] == [uids["tempo"]]


# ---- Kubernetes ---------------------------------------------------------------------------
def k8s_docs() -> dict[str, dict[str, Any]]:
    kust = load_yaml(K8S_DIR / "kustomization.yaml")
    docs = {}
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kust = load_yaml(K8S_DIR / "kustomization.yaml")
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk
    assert set(k8s_docs()) == {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"}
    for kind, doc in k8s_docs().items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == kust["namespace"], kind
    assert k8s_docs()["Namespace"]["metadata"]["name"] == kust["namespace"]


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_manifests_follow_the_kubernetes_schema(version: str) -> None:
    for doc in k8s_docs().values():
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field


def test_a_broken_manifest_fails_the_schema_check() -> None:
    ds = k8s_docs()["DaemonSet"]
    ds["spec"]["template"]["spec"]["hostPid"] = True  # the field is hostPID
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(ds, "1.30.0", strict=True)


def test_configmap_agent_config_validates() -> None:
    docs = k8s_docs()
    (name, text), = docs["ConfigMap"]["data"].items()
    cfg = parse_config(yaml.safe_load(text))
    endpoint = urlsplit(cfg.export.otlp.endpoint)
    # The node-local collector of collector-config/agent.yaml listens on the same address.
    agent = load_yaml(REPO / "collector-config" / "agent.yaml")
    assert agent["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == \
        f"{endpoint.hostname}:{endpoint.port}"
    assert cfg.export.live_view is False
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert config_path == Path(config_mount["mountPath"]) / name
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(cfg.export.files.directory)) in mounted
    assert str(Path(cfg.graph.socket_path).parent) in mounted
    # The compiled programs outlive the pod (a restart skips the compiler).
    cache = next(m for m in container["volumeMounts"]
                 if m["mountPath"] == cfg.kernel.program_cache)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[cache["name"]]["hostPath"]["path"] == cfg.kernel.program_cache


def test_daemonset_gives_the_agent_what_it_needs() -> None:
    docs = k8s_docs()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc.get("privileged") is False, f"{c['name']}: capabilities, not privileged"
        assert set(sc["capabilities"]["add"]) >= CAPABILITIES
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert set(mounts) >= AGENT_MOUNTS, AGENT_MOUNTS - set(mounts)
        for path in AGENT_MOUNTS:
            # Same path on the node and in the container: the header links in /lib/modules
            # point into /usr/src by absolute path.
            assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
        for m in c["volumeMounts"]:
            assert m["name"] in volumes, f"{c['name']} mounts undefined volume {m['name']}"
    env = pod["containers"][0]["env"]
    names = [e["name"] for e in env]
    node = env[names.index("NODE_NAME")]
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    attrs = env[names.index("OTEL_RESOURCE_ATTRIBUTES")]["value"]
    assert "k8s.node.name=$(NODE_NAME)" in attrs.split(",")
    assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES"), \
        "$(NODE_NAME) expands only if defined earlier"
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert len(images) == 1


def test_every_capability_says_why() -> None:
    text = (K8S_DIR / "daemonset.yaml").read_text()
    for cap in CAPABILITIES | {"DAC_READ_SEARCH"}:
        line = next((ln for ln in text.splitlines() if re.search(rf"- {cap}\b", ln)), None)
        assert line is not None and "#" in line and len(line.split("#", 1)[1].strip()) > 15, \
            f"{cap}: a comment on its line says why the agent needs it"
