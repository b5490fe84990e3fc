"""Model replicas in their own network namespaces, cut off from the network instead of killed.

Each mlp replica runs in a namespace joined to the root namespace by a veth pair with addresses
from 198.18.0.0/15 (the benchmark range, RFC 2544): root side 198.18.<i>.1, replica side
198.18.<i>.2. Consul (listening on 127.0.0.1 and each 198.18.<i>.1), the scaler and the
orchestrator stay in the root namespace. All traffic stays on this machine.

Cuts: the root end of the veth goes down (the replica becomes unreachable at once), or a
blackhole route swallows its packets (nothing answers, nothing is refused: no RST, no ICMP).
Under load no request may be lost; Consul must mark the replica critical; after the cut heals
it must come back.
Skipped unless root can create namespaces (`ip netns add`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshserve.clients.consul_agent import _pick_ports, find_consul_binary
from tests.meshload import (
    Load,
    apply_plan,
    digits_plan,
    expected_labels,
    model_endpoints,
    passing,
    require_servers,
)
from tests.procs import ChildProcess
from tests.waiting import wait_until, wait_until_sync

pytestmark = [pytest.mark.netns, pytest.mark.integration, pytest.mark.slow]

READY = re.compile(r"MESHSERVE_READY (\S+)")
REPLICAS = 2


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def _netns_problem() -> str:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"mshprobe{os.getpid()}"
    out = _ip("netns", "add", probe, check=False)
    if out.returncode != 0:
        return f"`ip netns add` fails here: {out.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return ""


@dataclass
class Slot:
    """One namespace with its veth pair."""

    index: int
    ns: str
    root_if: str
    ns_if: str

    @property
    def root_addr(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def ns_addr(self) -> str:
        return f"198.18.{self.index}.2"

    def create(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.ns)
        _ip("addr", "add", f"{self.root_addr}/24", "dev", self.root_if)
        _ip("link", "set", self.root_if, "up")
        for cmd in (
            ("addr", "add", f"{self.ns_addr}/24", "dev", self.ns_if),
            ("link", "set", self.ns_if, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", self.ns, *cmd)

    def destroy(self) -> None:
        _ip("netns", "del", self.ns, check=False)  # takes the veth pair with it
        _ip("link", "del", self.root_if, check=False)


@dataclass
class NsProcess:
    """A `meshserve` process started inside a namespace (`ip netns exec` execs: same PID)."""

    popen: subprocess.Popen[bytes]
    log: Path
    address: str = ""

    def wait_ready(self, timeout_s: float = 60) -> NsProcess:
        def ready() -> re.Match[str] | None:
            match = READY.search(self.log.read_text(errors="replace"))
            if match is None and self.popen.poll() is not None:
                raise RuntimeError(
                    f"exited {self.popen.returncode}: {self.log.read_text()[-2000:]}"
                )
            return match

        try:
            match = wait_until_sync(ready, timeout_s, "MESHSERVE_READY", 0.05, retry_on=())
        except AssertionError:
            raise TimeoutError(self.log.read_text()[-2000:]) from None
        self.address = match.group(1)
        return self

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@dataclass
class NetnsMesh:
    slots: list[Slot]
    consul: subprocess.Popen[bytes]
    consul_address: str
    token: str = "netns-token"
    children: list[ChildProcess] = field(default_factory=list)
    replicas: list[NsProcess] = field(default_factory=list)
    orchestrator: str = ""


def _start_consul(slots: list[Slot], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import random
    import urllib.request

    http, server, lan, wan = _pick_ports(4, random.Random())
    clients = " ".join(["127.0.0.1", *(s.root_addr for s in slots)])
    args = [
        find_consul_binary(), "agent", "-dev", "-bind", "127.0.0.1", "-client", clients,
        "-http-port", str(http), "-server-port", str(server), "-serf-lan-port", str(lan),
        "-serf-wan-port", str(wan), "-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn",
    ]  # fmt: skip
    with log.open("ab") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def leader() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/status/leader", timeout=1) as r:
            return bytes(r.read().strip(b'"'))

    try:
        wait_until_sync(leader, 30, "a Consul leader", retry_on=(OSError,))
    except AssertionError:
        popen.kill()
        raise TimeoutError("consul did not elect a leader") from None
    return popen, f"127.0.0.1:{http}"


@pytest.fixture(scope="module")
def netns_mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsMesh]:
    require_servers()
    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    logs = tmp_path_factory.mktemp("netns")
    tag = os.getpid() % 100000
    slots = [Slot(i + 1, f"msh{tag}-{i}", f"mr{tag}x{i}", f"mn{tag}x{i}") for i in range(REPLICAS)]
    consul: subprocess.Popen[bytes] | None = None
    mesh: NetnsMesh | None = None
    try:
        for slot in slots:
            slot.create()
        consul, address = _start_consul(slots, logs / "consul.log")
        mesh = NetnsMesh(slots, consul, address)
        for name, args in (
            ("scaler", ["model", "serve", str(models_dir / "scaler.onnx"), "--name", "scaler",
                        "--version", "1", "--port", "0", "--consul", address,
                        "--metrics-port", "-1"]),
            ("orchestrator", ["orchestrator", "serve", "--port", "0", "--consul", address,
                              "--metrics-port", "-1"]),
        ):  # fmt: skip
            child = ChildProcess(args, logs / f"{name}.log", {"MESHSERVE_ADMIN_TOKEN": mesh.token})
            mesh.children.append(child)
            child.start(60)
            if name == "orchestrator":
                mesh.orchestrator = child.address
        for slot in slots:
            log = logs / f"mlp-{slot.index}.log"
            with log.open("ab") as out:
                popen = subprocess.Popen(
                    ["ip", "netns", "exec", slot.ns, sys.executable, "-m", "meshserve.clients.cli",
                     "model", "serve", str(models_dir / "mlp.onnx"), "--name", "mlp",
                     "--version", "1", "--host", slot.ns_addr, "--port", "0",
                     "--consul", f"{slot.root_addr}:{address.rsplit(':', 1)[1]}",
                     "--metrics-port", "-1"],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
            mesh.replicas.append(NsProcess(popen, log).wait_ready())
        yield mesh
    finally:
        if mesh is not None:
            for replica in mesh.replicas:
                replica.stop()
            for child in reversed(mesh.children):
                child.stop(10)
        if consul is not None:
            consul.terminate()
            consul.wait(10)
        for slot in slots:
            slot.destroy()


def _cut(slot: Slot, how: str) -> None:
    if how == "link-down":
        _ip("link", "set", slot.root_if, "down")
    else:  # a blackhole route: packets vanish, established connections get no RST
        _ip("route", "add", "blackhole", f"{slot.ns_addr}/32")


def _heal(slot: Slot, how: str) -> None:
    if how == "link-down":
        _ip("link", "set", slot.root_if, "up")
    else:
        _ip("route", "del", "blackhole", f"{slot.ns_addr}/32", check=False)


@pytest.mark.parametrize("how", ["link-down", "blackhole-route"])
async def test_replica_cut_off_under_load_loses_no_request(
    netns_mesh: NetnsMesh, models_dir: Path, how: str
) -> None:
    mesh = netns_mesh
    victim = mesh.slots[0]
    X, expected = expected_labels(models_dir)
    await apply_plan(mesh.orchestrator, mesh.token, digits_plan())

    async def both_passing() -> bool:
        eps = await model_endpoints(mesh.orchestrator, mesh.token, "mlp")
        return len([e for e in eps if e.state == "passing"]) == REPLICAS

    await wait_until(both_passing, 30, "both namespaced mlp replicas in rotation")
    async with Load(mesh.orchestrator, X, expected, concurrency=4, timeout_s=10) as load:
        await load.wait_ok(40)
        _cut(victim, how)
        try:
            await load.wait_ok(150, timeout_s=60)

            async def critical() -> bool:
                return len(await passing(mesh.consul_address, "mlp")) == REPLICAS - 1

            await wait_until(critical, 30, "Consul to mark the cut-off replica critical")
        finally:
            _heal(victim, how)
        await wait_until(both_passing, 60, "the healed replica back in rotation")
        await load.wait_ok(40)
    assert load.failures == [], f"{len(load.failures)} lost: {load.failures[:5]}"
    assert load.wrong == [], load.wrong[:5]
