from __future__ import annotations

import pytest

from otelpeers.process.container import ContainerRef, container_from_cgroup, container_from_path

H = "0123456789abcdef" * 4
H2 = "fedcba9876543210" * 4


@pytest.mark.parametrize(("path", "want"), [
    (f"/docker/{H}", ContainerRef(H, "docker")),
    (f"/system.slice/docker-{H}.scope", ContainerRef(H, "docker")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/"
     f"cri-containerd-{H}.scope", ContainerRef(H, "containerd")),
    (f"/kubepods.slice/kubepods-pod1.slice/crio-{H}.scope", ContainerRef(H, "cri-o")),
    (f"/machine.slice/libpod-{H}.scope", ContainerRef(H, "podman")),
    (f"/machine.slice/libpod-{H}.scope/container", ContainerRef(H, "podman")),
    (f"/libpod_parent/libpod-{H}", ContainerRef(H, "podman")),
    (f"/kubepods/burstable/pod1234-5678/{H}", ContainerRef(H, None)),  # runtime not named
    (f"/docker/{H}/docker/{H2}", ContainerRef(H2, "docker")),  # innermost wins
    ("/lxc.payload.web1", ContainerRef("web1", "lxc")),
    ("/lxc/web1", ContainerRef("web1", "lxc")),
])
def test_known_shapes(path: str, want: ContainerRef) -> None:
    assert container_from_path(path) == want


@pytest.mark.parametrize("path", [
    None, "", "/", "/user.slice/user-1000.slice/session-3.scope", "/system.slice/nginx.service",
    f"/system.slice/crio-conmon-{H}.scope",  # conmon runs outside the container
    f"/machine.slice/libpod-conmon-{H}.scope",
    f"/somewhere/{H}",  # 64 hex alone, no runtime or kubepods around it: not guessed
    f"/docker/{H[:12]}",  # short ids are not cgroup names
    "/docker/" + "g" * 64,
    "/process_api/5a50a330f4bfbb129b5abc15ec560caa",
])
def test_unknown_shapes(path: str | None) -> None:
    assert container_from_path(path) is None


def test_v1_lines_used_when_v2_says_nothing() -> None:
    v1 = ("12:pids:/", f"4:memory:/docker/{H}", "1:name=systemd:/")
    assert container_from_cgroup("/", v1) == ContainerRef(H, "docker")
    v2 = f"/system.slice/docker-{H2}.scope"
    assert container_from_cgroup(v2, v1) == ContainerRef(H2, "docker")
    assert container_from_cgroup(None, ("garbage",)) is None
