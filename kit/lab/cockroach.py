"""The CockroachDB lab (compose/cockroachdb): a 3-node insecure cluster from the official image, and faults.

CockroachDB's server is under its vendor's own licence and is never downloaded, built or shipped by kit:
this controller only drives an image the user already has (``KIT_COCKROACH_LAB_IMAGE``, default
``cockroachdb/cockroach:v24.1.4``). :meth:`CockroachLab.image_problem` says when it is missing, and nothing
here pulls it. Workers reach the cluster with a multi-host libpq URL over the nodes' published SQL ports:
libpq moves on to the next node when one is down, and CockroachDB has no primary to find (Raft keeps every
range available while a majority of its replicas is). Faults: SIGKILL a node (and start it again),
disconnect a node from the lab network (a partition), and back. Shares the host plumbing (:mod:`kit.lab.host`)
and the timeline with the PostgreSQL lab.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from kit.lab.controller import Timeline, _env_int
from kit.lab.host import LabError, LabUnavailable, compose_cmd, engine_problem, find_compose_dir

CLUSTER = "cockroachdb"  # compose/cockroachdb
PROJECT = os.environ.get("KIT_COCKROACH_LAB_PROJECT", "kitcrdb")
DEFAULT_IMAGE = "cockroachdb/cockroach:v24.1.4"
NODES = ("roach1", "roach2", "roach3")
NET = os.environ.get("KIT_COCKROACH_LAB_NET", "172.30.59")
SQL_PORTS = {n: _env_int(f"KIT_COCKROACH_LAB_SQL_PORT_{i}", 26256 + i) for i, n in enumerate(NODES, 1)}

FAULTS = {
    **{f"kill-{n}": f"SIGKILL node {n} (its ranges stay available on the other two; `heal` starts it again)"
       for n in NODES},
    **{f"partition-{n}": f"disconnect node {n} from the lab network; `heal` reconnects it" for n in NODES},
    "heal": "start and reconnect every node, wait until every node answers SQL",
}


def image() -> str:
    """The CockroachDB image the lab runs (never pulled by kit)."""
    return os.environ.get("KIT_COCKROACH_LAB_IMAGE", DEFAULT_IMAGE)


class CockroachLab:
    """Controller of the CockroachDB lab cluster (compose project ``kitcrdb``)."""

    def __init__(self, *, timeline: Timeline | None = None, compose_dir: str | Path | None = None) -> None:
        self.timeline = timeline or Timeline()
        self._compose_given = compose_dir
        self._compose_dir: Path | None = None
        self._docker: Any = None

    # -- plumbing ---------------------------------------------------------------------------------------------
    @property
    def compose_dir(self) -> Path:
        if self._compose_dir is None:
            self._compose_dir = find_compose_dir(self._compose_given, cluster=CLUSTER)
        return self._compose_dir

    def _client(self) -> Any:
        if self._docker is None:
            problem = engine_problem()
            if problem:
                raise LabUnavailable(problem)
            import docker

            self._docker = docker.from_env(timeout=60)
        return self._docker

    def image_problem(self) -> str | None:
        """Why the lab cannot start here (no engine, or the CockroachDB image is not present locally), or None.
        Checked before anything starts, so nothing is ever pulled."""
        problem = engine_problem()
        if problem:
            return problem
        import docker

        try:
            self._client().images.get(image())
        except docker.errors.ImageNotFound:
            return (f"the CockroachDB image {image()} is not present locally; kit never pulls it (its licence is "
                    "the vendor's): `docker pull` it where a registry is reachable, or set KIT_COCKROACH_LAB_IMAGE "
                    "to a tag you have")
        return None

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = compose_cmd()
        if cmd is None:
            raise LabUnavailable("no compose tool (docker-compose or the docker compose plugin)")
        env = {**os.environ, "KIT_COCKROACH_LAB_IMAGE": image()}
        proc = subprocess.run([*cmd, "-p", PROJECT, *args], cwd=self.compose_dir, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise LabError(f"{' '.join(cmd)} {' '.join(args)} failed: " + " | ".join(tail))
        return proc

    def containers(self) -> dict[str, Any]:
        found = self._client().containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def container(self, service: str) -> Any:
        c = self.containers().get(service)
        if c is None:
            raise LabError(f"no container for service {service!r}: is the lab up (`kit lab up --cluster cockroachdb`)?")
        return c

    # -- URLs -------------------------------------------------------------------------------------------------
    @staticmethod
    def database_url(*, connect_timeout: int = 3) -> str:
        """Multi-host libpq URL over every node (CockroachDB has no primary: any live node serves)."""
        hosts = ",".join(f"127.0.0.1:{SQL_PORTS[n]}" for n in NODES)
        return (f"postgresql://root@{hosts}/defaultdb?sslmode=disable&connect_timeout={connect_timeout}"
                "&application_name=kit-lab")

    @staticmethod
    def node_url(node: str) -> str:
        return f"postgresql://root@127.0.0.1:{SQL_PORTS[node]}/defaultdb?sslmode=disable&connect_timeout=2"

    # -- lifecycle --------------------------------------------------------------------------------------------
    def up(self, timeout: float = 240.0) -> None:
        """Start the cluster from the local image (refusing to pull one), wait until every node answers SQL."""
        problem = self.image_problem()
        if problem:
            raise LabUnavailable(problem)
        self.timeline.add("compose up (cockroachdb)")
        self.compose("up", "-d", "--remove-orphans", timeout=timeout)
        self.wait_healthy(timeout=timeout)

    def down(self) -> None:
        self.timeline.add("compose down (cockroachdb)")
        self.compose("down", "-v", "--remove-orphans", "-t", "5")

    def is_up(self) -> bool:
        cs = self.containers() if self._docker or engine_problem() is None else {}
        return all(n in cs and cs[n].status == "running" for n in NODES)

    def node_answers(self, node: str) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.node_url(node), autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Wait until every node answers SQL; returns the seconds waited."""
        start = time.monotonic()
        while True:
            if all(self.node_answers(n) for n in NODES):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"the CockroachDB lab is not healthy after {timeout:.0f}s: answering "
                               f"{[n for n in NODES if self.node_answers(n)]}")
            time.sleep(1.0)

    def status(self) -> dict[str, Any]:
        cs = self.containers()
        return {"project": PROJECT, "image": image(),
                "containers": {name: c.status for name, c in sorted(cs.items())},
                "answering": [n for n in NODES if n in cs and cs[n].status == "running" and self.node_answers(n)],
                "database_url": self.database_url()}

    # -- faults -----------------------------------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        self.container(node).kill(signal="SIGKILL")
        self.timeline.add(f"SIGKILL {node}")

    def start_node(self, node: str) -> None:
        self.container(node).start()
        self.timeline.add(f"start {node}")

    def partition_node(self, node: str) -> None:
        net = self._client().networks.get(f"{PROJECT}_lab")
        net.disconnect(self.container(node), force=True)
        self.timeline.add(f"partition {node}")

    def reconnect(self, node: str) -> None:
        c = self.container(node)
        c.reload()
        if f"{PROJECT}_lab" not in c.attrs["NetworkSettings"]["Networks"]:
            self._client().networks.get(f"{PROJECT}_lab").connect(c, ipv4_address=f"{NET}.1{NODES.index(node) + 1}")
            self.timeline.add(f"reconnect {node}")

    def heal(self, timeout: float = 180.0) -> float:
        """Start stopped nodes, reconnect partitioned ones, wait until every node answers SQL."""
        for n in NODES:
            c = self.container(n)
            c.reload()
            if c.status == "paused":
                c.unpause()
                self.timeline.add(f"unpause {n}")
            elif c.status in ("exited", "created"):
                c.start()
                self.timeline.add(f"start {n}")
            self.reconnect(n)
        waited = self.wait_healthy(timeout=timeout)
        self.timeline.add("cluster healthy")
        return waited

    def fault(self, name: str) -> str:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
        if name.startswith("kill-"):
            self.kill_node(name[len("kill-"):])
            return f"killed {name[len('kill-'):]} (`kit lab fault --cluster cockroachdb heal` starts it again)"
        if name.startswith("partition-"):
            self.partition_node(name[len("partition-"):])
            return f"partitioned {name[len('partition-'):]} (`kit lab fault --cluster cockroachdb heal` reconnects it)"
        return f"healed; healthy after {self.heal():.1f}s"

    # The chaos runner's interface (shared with the PostgreSQL lab): no replication variants here.
    def set_variant(self, variant: str) -> None:
        if variant != "raft":
            raise ValueError("the CockroachDB lab has one variant: raft")

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
