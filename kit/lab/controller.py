"""The HA lab controller: bring the Patroni cluster up and down, find the primary, inject faults.

The cluster is ``compose/postgres-ha`` of a kit checkout (1 etcd, 3 PostgreSQL 15 nodes under Patroni
3.1.2, toxiproxy in front of every node); :func:`kit.lab.host.find_compose_dir` locates it. Containers are driven
through the Docker API (the ``docker`` package), network faults through toxiproxy's API
(``toxiproxy-python``), the cluster state through Patroni's REST API. Nothing here prints a password:
URLs are shown through :func:`kit.config.redact_url`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.config import redact_url
from kit.lab.host import (
    LabError,
    LabUnavailable,
    compose_cmd,
    engine_problem,
    find_compose_dir,
    toxiproxy_image,
)

PROJECT = os.environ.get("KIT_LAB_PROJECT", "kitlab")
PATRONI_IMAGE = "kit-lab/patroni:3.1.2-pg15"
MEMBERS = ("pg1", "pg2", "pg3")
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"  # in the node image (compose/postgres-ha/entrypoint.sh: bin_dir)
PG_DATA = "/var/lib/postgresql/data/pg"  # Patroni's data_dir there
VARIANTS = ("async", "sync")
LEADER_ROLES = ("leader", "master", "primary", "standby_leader")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


NET = os.environ.get("KIT_LAB_NET", "172.30.57")
PASSWORD = os.environ.get("KIT_LAB_PG_PASSWORD", "kitlab")
TOXIPROXY_API_PORT = _env_int("KIT_LAB_TOXIPROXY_API_PORT", 28474)
REST_PORTS = {m: _env_int(f"KIT_LAB_REST_PORT_{i}", 28000 + i) for i, m in enumerate(MEMBERS, 1)}
PG_PORTS = {m: _env_int(f"KIT_LAB_PG_PORT_{i}", 25430 + i) for i, m in enumerate(MEMBERS, 1)}
VICTIM_PORTS = {m: _env_int(f"KIT_LAB_VICTIM_PORT_{i}", 25440 + i) for i, m in enumerate(MEMBERS, 1)}
# Listen ports inside the toxiproxy container (fixed by compose/postgres-ha/docker-compose.yml).
_PROXY_LISTEN = {**{m: 15430 + i for i, m in enumerate(MEMBERS, 1)},
                 **{f"v_{m}": 15440 + i for i, m in enumerate(MEMBERS, 1)}}

# The fault names ``kit lab fault NAME`` accepts (each a Lab method, see Lab.fault).
FAULTS = {
    "kill-primary": "SIGKILL the primary's container (Patroni promotes a replica)",
    "pause-primary": "freeze the primary's container (docker pause); `heal` unpauses it",
    "partition-primary": "disconnect the primary from the lab network; `heal` reconnects it",
    "partition-victim": "take the victim worker's proxies down (toxiproxy disable)",
    "timeout-victim": "the victim worker's proxies stop forwarding (toxiproxy timeout toxic)",
    "latency": "add 50 ms +/- 40 ms latency on every database link",
    "reset-peer": "reset a share of the database connections (toxiproxy reset_peer)",
    "limit-data": "cut a share of the connections after a few kB of replies (toxiproxy limit_data)",
    "restart-cluster": "stop and start every node and etcd",
    "restart-primary": "stop the primary's PostgreSQL in immediate mode (a crash); Patroni starts it again in place",
    "heal": "remove every toxic, start/unpause/reconnect every container, wait until healthy",
}


@dataclass
class Member:
    """One Patroni member as /cluster reports it."""

    name: str
    role: str
    state: str
    lag: int | None
    timeline: int | None

    @property
    def is_leader(self) -> bool:
        return self.role in LEADER_ROLES


@dataclass
class Timeline:
    """The fault timeline of a scenario: (UNIX time, event) pairs, also echoed to a log function."""

    events: list[tuple[float, str]] = field(default_factory=list)
    log: Callable[[str], None] | None = None

    def add(self, event: str) -> float:
        """Record ``event`` now; returns its UNIX time."""
        t = time.time()
        self.events.append((t, event))
        if self.log:
            self.log(event)
        return t


class Lab:
    """Controller of one lab cluster (compose project ``kitlab``) in the given replication variant."""

    def __init__(self, variant: str = "async", *, timeline: Timeline | None = None,
                 compose_dir: str | Path | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.timeline = timeline or Timeline()
        self._compose_given = compose_dir
        self._compose_dir: Path | None = None
        self._docker: Any = None
        self._toxi: Any = None

    @property
    def compose_dir(self) -> Path:
        """The cluster's compose directory (see :func:`find_compose_dir`); LabUnavailable if missing."""
        if self._compose_dir is None:
            self._compose_dir = find_compose_dir(self._compose_given)
        return self._compose_dir

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._docker is None:
            problem = engine_problem()
            if problem:
                raise LabUnavailable(problem)
            import docker

            self._docker = docker.from_env(timeout=60)
        return self._docker

    def _compose_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("KIT_LAB_TOXIPROXY_IMAGE", toxiproxy_image())
        env["KIT_LAB_SYNCHRONOUS_MODE"] = "true" if self.variant == "sync" else "false"
        return env

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the compose tool on the lab's compose directory with this lab's project name and variant."""
        cmd = compose_cmd()
        if cmd is None:
            raise LabUnavailable("no compose tool (docker-compose or the docker compose plugin)")
        proc = subprocess.run([*cmd, "-p", PROJECT, *args], cwd=self.compose_dir, env=self._compose_env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise LabError(f"{' '.join(cmd)} {' '.join(args)} failed: " + " | ".join(tail))
        return proc

    def containers(self) -> dict[str, Any]:
        """Service name -> container of this compose project (all states)."""
        found = self._client().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def container(self, service: str) -> Any:
        """The container of ``service`` (raises LabError when the cluster is not up)."""
        c = self.containers().get(service)
        if c is None:
            raise LabError(f"no container for service {service!r}: is the lab up (`kit lab up`)?")
        return c

    def toxiproxy(self) -> Any:
        """The toxiproxy-python server handle, pointed at this lab's API port."""
        if self._toxi is None:
            from toxiproxy import Toxiproxy

            self._toxi = Toxiproxy()
            self._toxi.update_api_consumer("127.0.0.1", TOXIPROXY_API_PORT)
        return self._toxi

    @staticmethod
    def _rest(member: str, path: str, *, method: str = "GET", body: dict | None = None,
              timeout: float = 2.0) -> Any:
        """Call Patroni's REST API of ``member`` (published on 127.0.0.1); returns parsed JSON or None."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{REST_PORTS[member]}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
        except (OSError, ValueError):
            return None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    # -- URLs -------------------------------------------------------------------------------------------------
    @staticmethod
    def database_url(*, victim: bool = False, connect_timeout: int = 2) -> str:
        """Multi-host libpq URL through toxiproxy: libpq tries every node and keeps the writable one."""
        ports = VICTIM_PORTS if victim else PG_PORTS
        hosts = ",".join(f"127.0.0.1:{ports[m]}" for m in MEMBERS)
        return (f"postgresql://postgres:{PASSWORD}@{hosts}/postgres"
                f"?target_session_attrs=read-write&connect_timeout={connect_timeout}&application_name=kit-lab")

    @staticmethod
    def direct_url(member: str) -> str:
        """URL of one node's PostgreSQL through its (non-victim) proxy, any role."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{PG_PORTS[member]}/postgres?connect_timeout=2"

    # -- lifecycle --------------------------------------------------------------------------------------------
    def up(self, timeout: float = 240.0) -> None:
        """Bring the cluster up (building images that are missing), wait until healthy, apply the variant."""
        client = self._client()
        import docker

        try:
            client.images.get(PATRONI_IMAGE)
        except docker.errors.ImageNotFound:
            if not any((self.compose_dir / "wheels").glob("patroni-*.whl")):
                raise LabUnavailable(f"image {PATRONI_IMAGE} is missing and compose/postgres-ha/wheels is empty: "
                                     "run scripts/lab-setup.sh") from None
        self.timeline.add(f"compose up ({self.variant})")
        self.compose("up", "-d", "--remove-orphans", timeout=timeout)
        self.wait_healthy(timeout=timeout)
        self.ensure_proxies()
        self.set_variant(self.variant)

    def down(self) -> None:
        """Remove the cluster's containers, network and data (the images stay cached)."""
        self.timeline.add("compose down")
        self.compose("down", "-v", "--remove-orphans", "-t", "5")

    def is_up(self) -> bool:
        """True when every service's container exists and runs."""
        cs = self.containers() if self._docker or engine_problem() is None else {}
        return all(s in cs and cs[s].status == "running" for s in ("etcd", "toxiproxy", *MEMBERS))

    def members(self) -> list[Member]:
        """Patroni's view of the cluster, asked of the first member that answers (empty if none does)."""
        for m in MEMBERS:
            data = self._rest(m, "/cluster", timeout=1.5)
            if data and "members" in data:
                return [Member(x["name"], x.get("role", "?"), x.get("state", "?"),
                               x.get("lag") if isinstance(x.get("lag"), int) else None, x.get("timeline"))
                        for x in data["members"]]
        return []

    def primary(self) -> str | None:
        """Name of the running leader (pg1..pg3), or None while there is none."""
        for m in self.members():
            if m.is_leader and m.state == "running":
                return m.name
        return None

    def status(self) -> dict[str, Any]:
        """Containers, Patroni members, DCS config and proxies: a JSON-able snapshot for `kit lab status`."""
        out: dict[str, Any] = {"project": PROJECT, "variant": self.variant}
        out["containers"] = {s: c.status for s, c in sorted(self.containers().items())}
        out["members"] = [m.__dict__ for m in self.members()]
        out["primary"] = self.primary()
        leader = out["primary"] or next(iter(MEMBERS))
        cfg = self._rest(leader, "/config") or {}
        out["synchronous_mode"] = bool(cfg.get("synchronous_mode", False))
        try:
            out["proxies"] = {n: {"enabled": p.enabled, "toxics": sorted(p.toxics())}
                              for n, p in sorted(self.toxiproxy().proxies().items())}
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            out["proxies"] = f"toxiproxy API unreachable: {type(exc).__name__}"
        out["database_url"] = redact_url(self.database_url())
        return out

    def ensure_proxies(self) -> None:
        """Create (or fix) the toxiproxy proxies pg1..pg3 and v_pg1..v_pg3 for this lab network."""
        ips = {m: f"{NET}.1{i}" for i, m in enumerate(MEMBERS, 1)}
        wanted = []
        for m in MEMBERS:
            wanted.append({"name": m, "listen": f"0.0.0.0:{_PROXY_LISTEN[m]}", "upstream": f"{ips[m]}:5432",
                           "enabled": True})
            wanted.append({"name": f"v_{m}", "listen": f"0.0.0.0:{_PROXY_LISTEN['v_' + m]}",
                           "upstream": f"{ips[m]}:5432", "enabled": True})
        deadline = time.monotonic() + 30
        while True:
            try:
                self.toxiproxy().populate(wanted)
                return
            except Exception:  # noqa: BLE001 - the API may still be starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Wait for one running leader, two streaming replicas (one of them synchronous in the sync variant)
        and a writable primary through the workers' URL; returns the seconds waited."""
        start = time.monotonic()
        last = "no member answered"
        while True:
            members = self.members()
            leaders = [m for m in members if m.is_leader and m.state == "running"]
            replicas = [m for m in members if not m.is_leader and m.state in ("streaming", "running")
                        and (m.lag or 0) < 16 * 1024 * 1024]
            sync_ok = self.variant != "sync" or any(m.role == "sync_standby" for m in members)
            last = ", ".join(f"{m.name}:{m.role}/{m.state}" for m in members) or last
            if len(leaders) == 1 and len(replicas) == len(MEMBERS) - 1 and sync_ok and self._writable():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"cluster not healthy after {timeout:.0f}s: {last}")
            time.sleep(0.5)

    def _writable(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.database_url(), autocommit=True) as conn:
                conn.execute("SELECT txid_current()")
            return True
        except psycopg.Error:
            return False

    def set_variant(self, variant: str, timeout: float = 60.0) -> None:
        """Switch Patroni's synchronous_mode at run time (PATCH /config) and wait for the matching roles."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        want = variant == "sync"
        leader = self.primary() or MEMBERS[0]
        cfg = self._rest(leader, "/config") or {}
        if bool(cfg.get("synchronous_mode", False)) != want:
            self.timeline.add(f"synchronous_mode -> {want}")
            if self._rest(leader, "/config", method="PATCH", body={"synchronous_mode": want}) is None:
                raise LabError(f"PATCH /config on {leader} failed")
        self.wait_healthy(timeout=timeout)

    # -- faults -----------------------------------------------------------------------------------------------
    def _require_primary(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            p = self.primary()
            if p:
                return p
            if time.monotonic() > deadline:
                raise LabError("no primary to inject the fault into")
            time.sleep(0.5)

    def kill_primary(self) -> str:
        """SIGKILL the primary's container; returns the member name (start it again with ``start``)."""
        p = self._require_primary()
        self.container(p).kill()
        self.timeline.add(f"SIGKILL primary {p}")
        return p

    def restart_primary(self) -> str:
        """Stop the primary's PostgreSQL in immediate mode (every server process exits at once, no
        checkpoint: a crash of the database, not of the node); Patroni, still holding the leader key, starts
        it again in place within a loop or two. Returns the member."""
        p = self._require_primary()
        res = self.container(p).exec_run([PG_CTL, "-D", PG_DATA, "-m", "immediate", "stop"], user="postgres")
        if res.exit_code != 0:
            raise LabError(f"pg_ctl stop -m immediate on {p} failed: {res.output.decode(errors='replace')[-300:]}")
        self.timeline.add(f"immediate-mode stop of primary {p}")
        return p

    def wait_writable(self, timeout: float = 60.0) -> float:
        """Wait until the workers' URL accepts writes again; returns the seconds waited."""
        start = time.monotonic()
        while not self._writable():
            if time.monotonic() - start > timeout:
                raise LabError(f"the cluster took no writes for {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - start

    def start(self, member: str) -> None:
        """Start a stopped container (a killed old primary rejoins as a replica through pg_rewind)."""
        self.container(member).start()
        self.timeline.add(f"start {member}")

    def pause_primary(self) -> str:
        """Freeze the primary's container (cgroup freezer: sockets stay open, nothing answers)."""
        p = self._require_primary()
        self.container(p).pause()
        self.timeline.add(f"pause primary {p}")
        return p

    def unpause(self, member: str) -> None:
        """Thaw a paused container."""
        self.container(member).reload()
        if self.container(member).status == "paused":
            self.container(member).unpause()
        self.timeline.add(f"unpause {member}")

    def partition_primary(self) -> str:
        """Disconnect the primary's container from the lab network (from etcd, replicas and proxies)."""
        p = self._require_primary()
        net = self._client().networks.get(f"{PROJECT}_lab")
        net.disconnect(self.container(p), force=True)
        self.timeline.add(f"partition primary {p}")
        return p

    def reconnect(self, member: str) -> None:
        """Put a partitioned member back on the lab network at its fixed address."""
        idx = MEMBERS.index(member) + 1
        net = self._client().networks.get(f"{PROJECT}_lab")
        c = self.container(member)
        c.reload()
        if f"{PROJECT}_lab" not in c.attrs["NetworkSettings"]["Networks"]:
            net.connect(c, ipv4_address=f"{NET}.1{idx}")
            self.timeline.add(f"reconnect {member}")

    def _proxies(self, victim: bool = False) -> list[Any]:
        names = [f"v_{m}" if victim else m for m in MEMBERS]
        all_proxies = self.toxiproxy().proxies()
        return [all_proxies[n] for n in names]

    def partition_victim(self, mode: str = "disable") -> None:
        """Cut the victim worker's links: ``disable`` (connections refused and dropped) or ``timeout``
        (data stops flowing; connections hang until their own bounds fire)."""
        for p in self._proxies(victim=True):
            if mode == "disable":
                p.disable()
            else:
                p.add_toxic(type="timeout", name="partition_up", stream="upstream", attributes={"timeout": 0})
                p.add_toxic(type="timeout", name="partition_down", stream="downstream", attributes={"timeout": 0})
        self.timeline.add(f"partition victim worker ({mode})")

    def heal_victim(self) -> None:
        """Restore the victim worker's links."""
        for p in self._proxies(victim=True):
            for name in list(p.toxics()):
                p.destroy_toxic(name)
            p.enable()
        self.timeline.add("heal victim worker")

    def latency(self, ms: int = 50, jitter: int = 40) -> None:
        """Add latency with jitter in both directions on every link (workers' and victim's)."""
        for p in self._proxies() + self._proxies(victim=True):
            for stream in ("upstream", "downstream"):
                p.add_toxic(type="latency", name=f"latency_{stream}", stream=stream,
                            attributes={"latency": ms, "jitter": jitter})
        self.timeline.add(f"latency {ms} ms +/- {jitter} ms on every link")

    def reset_peer(self, toxicity: float = 0.3, after_ms: int = 300) -> None:
        """Reset a share of the links (TCP RST) ``after_ms`` after data flows: commits die mid-flight."""
        for p in self._proxies():
            p.add_toxic(type="reset_peer", name="reset_peer", stream="upstream", toxicity=toxicity,
                        attributes={"timeout": after_ms})
        self.timeline.add(f"reset_peer toxicity {toxicity} after {after_ms} ms")

    def limit_data(self, toxicity: float = 0.3, nbytes: int = 4096) -> None:
        """Close a share of the links after ``nbytes`` of replies: the server committed, the reply is lost."""
        for p in self._proxies():
            p.add_toxic(type="limit_data", name="limit_data", stream="downstream", toxicity=toxicity,
                        attributes={"bytes": nbytes})
        self.timeline.add(f"limit_data toxicity {toxicity} after {nbytes} B")

    def clear_toxics(self) -> None:
        """Remove every toxic and enable every proxy (toxiproxy reset)."""
        self.toxiproxy().reset()
        self.timeline.add("toxics cleared")

    def restart_cluster(self, stop_timeout: int = 10) -> float:
        """Stop every PostgreSQL node and etcd (in parallel), then start them again; returns the UNIX time
        at which the whole cluster was down (recovery is measured from there)."""
        cs = self.containers()
        nodes = [cs[m] for m in MEMBERS]
        self.timeline.add("stopping the whole cluster")
        threads = [threading.Thread(target=c.stop, kwargs={"timeout": stop_timeout}) for c in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cs["etcd"].stop(timeout=stop_timeout)
        down = self.timeline.add("cluster stopped")
        cs["etcd"].start()
        for c in nodes:
            c.start()
        self.timeline.add("cluster started")
        return down

    def heal(self, timeout: float = 180.0) -> float:
        """Undo every fault: toxics, paused/stopped/disconnected containers; wait until healthy."""
        try:
            self.clear_toxics()
        except Exception:  # noqa: BLE001 - toxiproxy itself may be the stopped container
            pass
        for service, c in self.containers().items():
            c.reload()
            if c.status == "paused":
                c.unpause()
                self.timeline.add(f"unpause {service}")
            elif c.status in ("exited", "created"):
                c.start()
                self.timeline.add(f"start {service}")
        for m in MEMBERS:
            self.reconnect(m)
        self.ensure_proxies()
        waited = self.wait_healthy(timeout=timeout)
        self.timeline.add("cluster healthy")
        return waited

    def wait_new_primary(self, old: str, timeout: float = 90.0) -> str:
        """Wait until a member other than ``old`` leads and accepts writes; returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.primary()
            if p and p != old and self._writable():
                self.timeline.add(f"new primary {p}")
                return p
            if time.monotonic() > deadline:
                raise LabError(f"no new primary within {timeout:.0f}s after {old} failed")
            time.sleep(0.2)

    def fault(self, name: str) -> str:
        """Inject the named fault (see FAULTS) by hand; returns a one-line description of what was done."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
        if name == "kill-primary":
            return f"killed primary {self.kill_primary()} (start it again with `kit lab fault heal`)"
        if name == "pause-primary":
            return f"paused primary {self.pause_primary()} (`kit lab fault heal` unpauses it)"
        if name == "partition-primary":
            return f"partitioned primary {self.partition_primary()} (`kit lab fault heal` reconnects it)"
        if name == "partition-victim":
            self.partition_victim("disable")
            return "victim proxies v_pg1..v_pg3 disabled"
        if name == "timeout-victim":
            self.partition_victim("timeout")
            return "victim proxies v_pg1..v_pg3 stopped forwarding"
        if name == "latency":
            self.latency()
            return "latency 50 ms +/- 40 ms on every link"
        if name == "reset-peer":
            self.reset_peer()
            return "reset_peer on 30% of the workers' links"
        if name == "limit-data":
            self.limit_data()
            return "limit_data on 30% of the workers' links"
        if name == "restart-primary":
            member = self.restart_primary()
            return f"restarted primary {member}'s PostgreSQL; writable again after {self.wait_writable():.1f}s"
        if name == "restart-cluster":
            self.restart_cluster()
            return f"cluster restarted; healthy after {self.wait_healthy():.1f}s"
        return f"healed; healthy after {self.heal():.1f}s"

    @contextmanager
    def faulted(self) -> Iterator[Lab]:
        """Context for a scenario: heals the cluster afterwards whatever happened."""
        try:
            yield self
        finally:
            self.heal()

    def close(self) -> None:
        """Release the Docker API client."""
        if self._docker is not None:
            self._docker.close()
            self._docker = None


def jitter_sleep(lo: float, hi: float) -> None:
    """Sleep a random time in [lo, hi] seconds (fault injection spacing)."""
    time.sleep(random.uniform(lo, hi))
