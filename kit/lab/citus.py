"""The Citus HA lab (compose/citus-ha): cluster definition and controller.

etcd + Patroni 3.1.2 in its Citus mode over six PostgreSQL 15 + Citus 13.2.2 nodes: the coordinator group 0
and worker groups 1 and 2 (a primary and a synchronous standby each), toxiproxy in front of the coordinator
for clients on the host and between all nodes: every node's Patroni ``postgresql.connect_address`` is its
toxiproxy endpoint, so the addresses Patroni registers in the coordinator's pg_dist_node route through
toxiproxy. Shares the host plumbing (:mod:`kit.lab.host`) and the Member/Timeline records with the
PostgreSQL lab (:mod:`kit.lab.controller`). docs/lab.md has the topology and measured failovers.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kit.config import redact_url
from kit.lab.controller import PASSWORD, Member, Timeline, _env_int
from kit.lab.host import (
    LabError,
    LabUnavailable,
    compose_cmd,
    engine_problem,
    find_compose_dir,
    toxiproxy_image,
)

CITUS_PROJECT = os.environ.get("KIT_CITUS_LAB_PROJECT", "kitcitus")
CITUS_IMAGE = "kit-lab/citus:13.2.2-pg15"
CITUS_NET = os.environ.get("KIT_CITUS_LAB_NET", "172.30.58")
CITUS_DATABASE = "citus"
COORDINATOR_GROUP = 0
# Group -> its two members (Patroni names = compose services); the coordinator is group 0.
CITUS_GROUPS: dict[int, tuple[str, str]] = {0: ("coord1", "coord2"), 1: ("worker1a", "worker1b"),
                                            2: ("worker2a", "worker2b")}
CITUS_MEMBERS = tuple(m for ms in CITUS_GROUPS.values() for m in ms)
CITUS_GROUP_OF = {m: g for g, ms in CITUS_GROUPS.items() for m in ms}
# Last octet of each node's fixed IP on the lab network; its toxiproxy endpoint is TOXIPROXY_IP:55<octet>.
_CITUS_OCTET = {"coord1": 11, "coord2": 12, "worker1a": 21, "worker1b": 22, "worker2a": 31, "worker2b": 32}
CITUS_TOXIPROXY_IP = f"{CITUS_NET}.40"
CITUS_TOXIPROXY_API_PORT = _env_int("KIT_CITUS_LAB_TOXIPROXY_API_PORT", 29474)
CITUS_REST_PORTS = {m: _env_int(f"KIT_CITUS_LAB_REST_PORT_{m.upper()}", 29000 + o) for m, o in _CITUS_OCTET.items()}
CITUS_PG_PORTS = {m: _env_int(f"KIT_CITUS_LAB_PG_PORT_{m.upper()}", 26500 + o) for m, o in _CITUS_OCTET.items()}
# Host ports of the clients' proxies to the coordinator nodes (and of the separately cuttable "victim" ones).
CITUS_CLIENT_PORTS = {m: _env_int(f"KIT_CITUS_LAB_CLIENT_PORT_{i}", 26430 + i)
                      for i, m in enumerate(CITUS_GROUPS[COORDINATOR_GROUP], 1)}
CITUS_VICTIM_PORTS = {m: _env_int(f"KIT_CITUS_LAB_VICTIM_PORT_{i}", 26440 + i)
                      for i, m in enumerate(CITUS_GROUPS[COORDINATOR_GROUP], 1)}

# The fault names CitusLab.fault accepts (the future `kit lab fault --cluster citus NAME`).
CITUS_FAULTS = {
    "kill-coordinator-primary": "SIGKILL the coordinator group's primary (Patroni promotes its standby)",
    "pause-coordinator-primary": "freeze the coordinator group's primary; `heal` unpauses it",
    **{f"kill-group{g}-primary": f"SIGKILL worker group {g}'s primary (Patroni promotes its standby and "
                                 "rewrites pg_dist_node)" for g in (1, 2)},
    **{f"pause-group{g}-primary": f"freeze worker group {g}'s primary; `heal` unpauses it" for g in (1, 2)},
    **{f"cut-group{g}": f"cut worker group {g} off from the coordinator (its toxiproxy links disabled)"
       for g in (1, 2)},
    "cut-victim": "take the victim client's proxies to the coordinator down (toxiproxy disable)",
    "heal": "remove every toxic, start/unpause every container, wait until healthy",
}


def citus_node_address(member: str) -> tuple[str, int]:
    """The (host, port) a node is known by inside the cluster: its toxiproxy endpoint, which is its Patroni
    ``connect_address`` and so what Patroni writes into pg_dist_node while it leads its group."""
    return CITUS_TOXIPROXY_IP, 5500 + _CITUS_OCTET[member]


def citus_member_at(host: str, port: int) -> str | None:
    """The member whose toxiproxy endpoint is ``host:port`` (None for an address that is no member's)."""
    for m in CITUS_MEMBERS:
        if citus_node_address(m) == (host, int(port)):
            return m
    return None


class CitusLab:
    """Controller of the Citus HA lab cluster (compose project ``kitcitus``): lifecycle, Patroni's view of
    each group, pg_dist_node, URLs, and faults per group."""

    def __init__(self, *, timeline: Timeline | None = None, compose_dir: str | Path | None = None,
                 shard_count: int | None = None) -> None:
        self.timeline = timeline or Timeline()
        # citus.shard_count for the sessions of database_url() (what kit's migration distributes tables with);
        # None: the cluster's (Citus's default 32).
        self.shard_count = shard_count
        self.compose_dir = compose_dir  # None: compose/citus-ha of the checkout (kit.lab.host.find_compose_dir)
        self._docker: Any = None
        self._toxi: Any = None

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._docker is None:
            problem = engine_problem()
            if problem:
                raise LabUnavailable(problem)
            import docker

            self._docker = docker.from_env(timeout=60)
        return self._docker

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the compose tool on compose/citus-ha with this lab's project name."""
        cmd = compose_cmd()
        if cmd is None:
            raise LabUnavailable("no compose tool (docker-compose or the docker compose plugin)")
        env = dict(os.environ)
        env.setdefault("KIT_LAB_TOXIPROXY_IMAGE", toxiproxy_image())
        proc = subprocess.run([*cmd, "-p", CITUS_PROJECT, *args], cwd=find_compose_dir(self.compose_dir, "citus-ha"), env=env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise LabError(f"{' '.join(cmd)} {' '.join(args)} failed: " + " | ".join(tail))
        return proc

    def containers(self) -> dict[str, Any]:
        """Service name -> container of this compose project (all states)."""
        found = self._client().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={CITUS_PROJECT}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def container(self, service: str) -> Any:
        """The container of ``service`` (raises LabError when the cluster is not up)."""
        c = self.containers().get(service)
        if c is None:
            raise LabError(f"no container for service {service!r}: is the Citus lab up?")
        return c

    def toxiproxy(self) -> Any:
        """The toxiproxy-python server handle, pointed at this lab's API port."""
        if self._toxi is None:
            from toxiproxy import Toxiproxy

            self._toxi = Toxiproxy()
            self._toxi.update_api_consumer("127.0.0.1", CITUS_TOXIPROXY_API_PORT)
        return self._toxi

    @staticmethod
    def _rest(member: str, path: str, *, timeout: float = 2.0) -> Any:
        """GET Patroni's REST API of ``member`` (published on 127.0.0.1); parsed JSON or None."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{CITUS_REST_PORTS[member]}{path}",
                                        timeout=timeout) as resp:
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
    def coordinator_url(*, victim: bool = False, connect_timeout: int = 2) -> str:
        """Multi-host libpq URL of the coordinator group through the clients' toxiproxy endpoints: libpq tries
        both coordinator nodes and keeps the writable one (the group's primary)."""
        ports = CITUS_VICTIM_PORTS if victim else CITUS_CLIENT_PORTS
        hosts = ",".join(f"127.0.0.1:{ports[m]}" for m in CITUS_GROUPS[COORDINATOR_GROUP])
        return (f"postgresql://postgres:{PASSWORD}@{hosts}/{CITUS_DATABASE}"
                f"?target_session_attrs=read-write&connect_timeout={connect_timeout}&application_name=kit-lab")

    def database_url(self, *, victim: bool = False, connect_timeout: int = 2) -> str:
        """The URL kit clients use (the coordinator's, see :meth:`coordinator_url`, with this lab's
        ``citus.shard_count`` when set): the same name as ``Lab.database_url`` so the chaos scenario machinery
        drives either lab."""
        url = self.coordinator_url(victim=victim, connect_timeout=connect_timeout)
        if self.shard_count:
            url += f"&options=-c%20citus.shard_count%3D{int(self.shard_count)}"
        return url

    @staticmethod
    def direct_url(member: str) -> str:
        """URL of one node's PostgreSQL published directly (no toxiproxy, any role): for checks that must
        reach a node whatever the faults."""
        return (f"postgresql://postgres:{PASSWORD}@127.0.0.1:{CITUS_PG_PORTS[member]}/{CITUS_DATABASE}"
                "?connect_timeout=2&application_name=kit-lab")

    def _query(self, sql_text: str, params: tuple[Any, ...] = (), *, url: str | None = None,
               timeout_ms: int = 20000) -> list[tuple[Any, ...]] | None:
        """Rows of a read-only query on the coordinator primary (or ``url``), or None when it can't be reached.
        Bounded by connect_timeout and statement_timeout (never used for writes whose commit matters)."""
        import psycopg

        try:
            with psycopg.connect(url or self.coordinator_url(), autocommit=True,
                                 options=f"-c statement_timeout={int(timeout_ms)}") as conn:
                return conn.execute(sql_text, params).fetchall()
        except psycopg.Error:
            return None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def up(self, timeout: float = 300.0) -> float:
        """Bring the cluster up from nothing (etcd and toxiproxy first, their proxies set, then the six nodes),
        wait until healthy; returns the seconds from `compose up` to healthy."""
        client = self._client()
        import docker

        try:
            client.images.get(CITUS_IMAGE)
        except docker.errors.ImageNotFound:
            raise LabUnavailable(f"image {CITUS_IMAGE} is missing: run scripts/lab-setup.sh (it compiles Citus "
                                 "from ../shared/vendor/citus-13.2.2.tar.gz)") from None
        start = time.monotonic()
        self.timeline.add("compose up (citus)")
        self.compose("up", "-d", "--remove-orphans", "etcd", "toxiproxy", timeout=timeout)
        self.ensure_proxies()
        self.compose("up", "-d", "--remove-orphans", timeout=timeout)
        self.wait_healthy(timeout=timeout)
        took = time.monotonic() - start
        self.timeline.add(f"citus cluster healthy after {took:.1f}s")
        return took

    def down(self) -> None:
        """Remove the cluster's containers, network and data (the images stay cached)."""
        self.timeline.add("compose down (citus)")
        self.compose("down", "-v", "--remove-orphans", "-t", "5")

    variant = "sync"  # every group replicates synchronously (compose/citus-ha: synchronous_mode in each group)

    def set_variant(self, variant: str, timeout: float = 60.0) -> None:
        """Accept the lab's one replication variant, ``"sync"`` (the chaos scenario machinery asks for one);
        anything else is refused: this cluster has no asynchronous variant."""
        if variant != "sync":
            raise ValueError(f"the Citus lab replicates synchronously in every group: variant must be 'sync', "
                             f"got {variant!r}")

    def is_up(self) -> bool:
        """True when every service's container exists and runs."""
        cs = self.containers() if self._docker or engine_problem() is None else {}
        return all(s in cs and cs[s].status == "running" for s in ("etcd", "toxiproxy", *CITUS_MEMBERS))

    def ensure_proxies(self) -> None:
        """Create (or fix) every proxy: one per node (its connect_address), and the clients' and victim's proxies
        to the two coordinator nodes."""
        ip = {m: f"{CITUS_NET}.{o}" for m, o in _CITUS_OCTET.items()}
        wanted = [{"name": m, "listen": f"0.0.0.0:{citus_node_address(m)[1]}", "upstream": f"{ip[m]}:5432",
                   "enabled": True} for m in CITUS_MEMBERS]
        for i, m in enumerate(CITUS_GROUPS[COORDINATOR_GROUP], 1):
            wanted.append({"name": f"client_{m}", "listen": f"0.0.0.0:{15510 + i}", "upstream": f"{ip[m]}:5432",
                           "enabled": True})
            wanted.append({"name": f"victim_{m}", "listen": f"0.0.0.0:{15610 + i}", "upstream": f"{ip[m]}:5432",
                           "enabled": True})
        deadline = time.monotonic() + 30
        while True:
            try:
                self._populate(wanted)
                return
            except Exception:  # noqa: BLE001 - the API may still be starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _populate(self, wanted: list[dict[str, Any]]) -> None:
        """Create missing proxies, re-create wrong ones, leave right ones alone. (toxiproxy-python's populate
        compares ``listen`` textually, and the server reports ``0.0.0.0:5511`` back as ``[::]:5511``: it would
        re-create every proxy and drop every connection through them, replication included.)"""
        toxi = self.toxiproxy()
        existing = toxi.proxies()
        for w in wanted:
            p = existing.get(w["name"])
            if p is not None and p.upstream == w["upstream"] \
                    and p.listen.rsplit(":", 1)[-1] == w["listen"].rsplit(":", 1)[-1]:
                continue
            if p is not None:
                toxi.destroy(p)
            toxi.create(**w)

    # -- cluster state ----------------------------------------------------------------------------------------
    def members(self, group: int) -> list[Member]:
        """Patroni's view of one group (GET /cluster of the first member of the group that answers)."""
        for m in CITUS_GROUPS[group]:
            data = self._rest(m, "/cluster", timeout=1.5)
            if data and "members" in data:
                return [Member(x["name"], x.get("role", "?"), x.get("state", "?"),
                               x.get("lag") if isinstance(x.get("lag"), int) else None, x.get("timeline"))
                        for x in data["members"]]
        return []

    def primary(self, group: int) -> str | None:
        """The group's running leader as Patroni reports it, or None while there is none. Right after a kill
        this is still the dead node until its leader key expires (ttl): compare with the old name."""
        for m in self.members(group):
            if m.is_leader and m.state == "running":
                return m.name
        return None

    def primaries(self) -> dict[int, str | None]:
        """Group -> its current primary (Patroni)."""
        return {g: self.primary(g) for g in CITUS_GROUPS}

    def pg_dist_node(self) -> list[dict[str, Any]] | None:
        """The coordinator's pg_dist_node (primary rows), each with the member its address belongs to; None
        while the coordinator primary can't be reached."""
        rows = self._query("SELECT nodeid, groupid, nodename, nodeport, noderole::text, isactive, hasmetadata,"
                           " metadatasynced FROM pg_catalog.pg_dist_node ORDER BY groupid, nodeid")
        if rows is None:
            return None
        keys = ("nodeid", "groupid", "nodename", "nodeport", "noderole", "isactive", "hasmetadata", "metadatasynced")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["member"] = citus_member_at(r["nodename"], r["nodeport"])
        return out

    def registered(self) -> dict[int, str | None] | None:
        """Group -> the member pg_dist_node routes that group's queries to (None: unknown address); None when the
        coordinator can't be reached."""
        rows = self.pg_dist_node()
        if rows is None:
            return None
        return {r["groupid"]: r["member"] for r in rows if r["noderole"] == "primary"}

    def stuck_backends(self, older_than_s: float = 10.0) -> list[dict[str, Any]] | None:
        """Coordinator backends whose statement has run longer than ``older_than_s`` (a backend talking to a
        frozen node, or over a link that drops data, waits without bound: see docs/lab.md); None when the
        coordinator can't be reached."""
        rows = self._query(
            "SELECT pid, state, wait_event_type, wait_event, extract(epoch FROM now() - query_start)::float8,"
            " left(query, 200) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'"
            " AND state <> 'idle' AND pid <> pg_backend_pid() AND now() - query_start > make_interval(secs => %s)"
            " ORDER BY query_start", (float(older_than_s),))
        if rows is None:
            return None
        keys = ("pid", "state", "wait_event_type", "wait_event", "seconds", "query")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def groups_of(self, table: str, keys: list[Any]) -> dict[Any, int]:
        """Which group holds the shard of each distribution-column value of a distributed ``table`` (asked of
        the coordinator's metadata; keys are passed as text and converted by Citus)."""
        rows = self._query(
            "SELECT k, p.groupid FROM unnest(%s::text[]) WITH ORDINALITY AS u(k, i)"
            " JOIN pg_catalog.pg_dist_placement p"
            "   ON p.shardid = pg_catalog.get_shard_id_for_distribution_column(%s::regclass, u.k)"
            " ORDER BY u.i", ([str(k) for k in keys], table))
        if rows is None:
            raise LabError("the coordinator can't be reached to map keys to groups")
        by_text = {str(k): k for k in keys}
        return {by_text[k]: int(g) for k, g in rows}

    def _group_healthy(self, group: int) -> tuple[bool, str]:
        members = self.members(group)
        leaders = [m for m in members if m.is_leader and m.state == "running"]
        standbys = [m for m in members if m.role == "sync_standby" and m.state in ("streaming", "running")
                    and (m.lag or 0) < 16 * 1024 * 1024]
        desc = ",".join(f"{m.name}:{m.role}/{m.state}" for m in members) or "no answer"
        return len(leaders) == 1 and len(standbys) == len(CITUS_GROUPS[group]) - 1, desc

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Wait until every group has one running leader and a streaming synchronous standby, pg_dist_node
        routes every group to its current leader with Citus metadata synced to it, and every node reaches every
        other (citus_check_cluster_node_health); returns the seconds waited."""
        start = time.monotonic()
        last = "nothing checked yet"
        while True:
            states = {g: self._group_healthy(g) for g in CITUS_GROUPS}
            last = "; ".join(f"group {g}: {d}" for g, (_, d) in states.items())
            if all(ok for ok, _ in states.values()):
                leaders = self.primaries()
                rows = self.pg_dist_node()
                reg = {r["groupid"]: r["member"] for r in rows or [] if r["noderole"] == "primary"}
                unsynced = [r["groupid"] for r in rows or [] if r["hasmetadata"] and not r["metadatasynced"]]
                if rows is None:
                    last += "; coordinator unreachable"
                elif any(reg.get(g) != leaders[g] for g in CITUS_GROUPS):
                    last += f"; pg_dist_node routes {reg}, leaders {leaders}"
                elif unsynced:
                    last += f"; Citus metadata not yet synced to groups {unsynced}"
                else:
                    health = self._query("SELECT count(*) FILTER (WHERE result IS NOT TRUE), count(*)"
                                         " FROM pg_catalog.citus_check_cluster_node_health()")
                    if health and health[0][0] == 0 and health[0][1] == len(CITUS_GROUPS) ** 2:
                        return time.monotonic() - start
                    last += f"; node health (failing, checked): {health}"
            if time.monotonic() - start > timeout:
                raise LabError(f"Citus cluster not healthy after {timeout:.0f}s: {last}")
            time.sleep(0.5)

    def wait_new_primary(self, group: int, old: str, timeout: float = 90.0) -> str:
        """Wait until Patroni reports a running leader other than ``old`` in ``group``; returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.primary(group)
            if p and p != old:
                self.timeline.add(f"group {group}: new primary {p}")
                return p
            if time.monotonic() > deadline:
                raise LabError(f"group {group}: no new primary within {timeout:.0f}s after {old} failed")
            time.sleep(0.2)

    def wait_registered(self, group: int, member: str, timeout: float = 60.0) -> float:
        """Wait until the coordinator's pg_dist_node routes ``group`` to ``member``; returns the seconds waited."""
        start = time.monotonic()
        while True:
            reg = self.registered()
            if reg is not None and reg.get(group) == member:
                self.timeline.add(f"pg_dist_node: group {group} -> {member}")
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"pg_dist_node does not route group {group} to {member} after {timeout:.0f}s: {reg}")
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        """Containers, each group's Patroni members and config, pg_dist_node and proxies (JSON-able)."""
        out: dict[str, Any] = {"project": CITUS_PROJECT}
        out["containers"] = {s: c.status for s, c in sorted(self.containers().items())}
        groups: dict[str, Any] = {}
        for g, ms in CITUS_GROUPS.items():
            cfg = next((c for c in (self._rest(m, "/config", timeout=1.5) for m in ms) if c), {})
            groups[str(g)] = {"members": [m.__dict__ for m in self.members(g)], "primary": self.primary(g),
                              "synchronous_mode": bool(cfg.get("synchronous_mode", False))}
        out["groups"] = groups
        out["pg_dist_node"] = self.pg_dist_node()
        try:
            out["proxies"] = {n: {"enabled": p.enabled, "toxics": sorted(p.toxics())}
                              for n, p in sorted(self.toxiproxy().proxies().items())}
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            out["proxies"] = f"toxiproxy API unreachable: {type(exc).__name__}"
        out["coordinator_url"] = redact_url(self.coordinator_url())
        return out

    # -- faults -----------------------------------------------------------------------------------------------
    def _require_primary(self, group: int, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            p = self.primary(group)
            if p:
                return p
            if time.monotonic() > deadline:
                raise LabError(f"group {group} has no primary to inject the fault into")
            time.sleep(0.5)

    def kill_primary(self, group: int) -> str:
        """SIGKILL ``group``'s primary container; returns the member (``start`` brings it back as a standby)."""
        p = self._require_primary(group)
        self.container(p).kill()
        self.timeline.add(f"SIGKILL group {group} primary {p}")
        return p

    def kill_coordinator_primary(self) -> str:
        """SIGKILL the coordinator group's primary; clients reconnect through the multi-host URL."""
        return self.kill_primary(COORDINATOR_GROUP)

    def pause_primary(self, group: int) -> str:
        """Freeze ``group``'s primary container (sockets stay open, nothing answers); ``unpause`` thaws it."""
        p = self._require_primary(group)
        self.container(p).pause()
        self.timeline.add(f"pause group {group} primary {p}")
        return p

    def start(self, member: str) -> None:
        """Start a stopped container (a killed old primary rejoins its group as a standby through pg_rewind)."""
        self.container(member).start()
        self.timeline.add(f"start {member}")

    def unpause(self, member: str) -> None:
        """Thaw a paused container (an old primary demotes itself and rejoins as a standby)."""
        c = self.container(member)
        c.reload()
        if c.status == "paused":
            c.unpause()
        self.timeline.add(f"unpause {member}")

    def cut_group(self, group: int, mode: str = "disable") -> None:
        """Cut worker ``group`` off from the coordinator: its nodes' proxies (their connect_addresses) are
        ``disable``d (connections refused, open ones dropped) or stop forwarding (``timeout``: connections hang).
        The group's replica streams through the same proxy, so it is cut from its primary too; Patroni's REST
        and etcd traffic do not pass through toxiproxy, so no failover follows."""
        if group == COORDINATOR_GROUP or group not in CITUS_GROUPS:
            raise ValueError(f"cut_group takes a worker group ({', '.join(str(g) for g in CITUS_GROUPS if g)})")
        if mode not in ("disable", "timeout"):
            raise ValueError(f"mode must be 'disable' or 'timeout', got {mode!r}")
        proxies = self.toxiproxy().proxies()
        for m in CITUS_GROUPS[group]:
            p = proxies[m]
            if mode == "disable":
                p.disable()
            else:
                p.add_toxic(type="timeout", name="cut_up", stream="upstream", attributes={"timeout": 0})
                p.add_toxic(type="timeout", name="cut_down", stream="downstream", attributes={"timeout": 0})
        self.timeline.add(f"cut group {group} off ({mode})")

    def restore_group(self, group: int) -> None:
        """Undo ``cut_group``: remove the group's toxics and enable its proxies."""
        proxies = self.toxiproxy().proxies()
        for m in CITUS_GROUPS[group]:
            p = proxies[m]
            for name in list(p.toxics()):
                p.destroy_toxic(name)
            p.enable()
        self.timeline.add(f"restore group {group}")

    def cut_victim(self) -> None:
        """Take the victim client's proxies to the coordinator down (kit's other clients are not affected)."""
        proxies = self.toxiproxy().proxies()
        for m in CITUS_GROUPS[COORDINATOR_GROUP]:
            proxies[f"victim_{m}"].disable()
        self.timeline.add("cut victim client")

    def clear_toxics(self) -> None:
        """Remove every toxic and enable every proxy (toxiproxy reset)."""
        self.toxiproxy().reset()
        self.timeline.add("toxics cleared")

    def heal(self, timeout: float = 180.0) -> float:
        """Undo every fault (toxics, disabled proxies, paused or stopped containers); wait until healthy."""
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
        self.ensure_proxies()
        waited = self.wait_healthy(timeout=timeout)
        self.timeline.add("citus cluster healthy")
        return waited

    def fault(self, name: str) -> str:
        """Inject the named fault (see CITUS_FAULTS) by hand; returns a one-line description."""
        if name not in CITUS_FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(CITUS_FAULTS)}")
        if name == "heal":
            return f"healed; healthy after {self.heal():.1f}s"
        if name == "cut-victim":
            self.cut_victim()
            return "victim proxies to the coordinator disabled"
        action, target = name.split("-", 1)
        group = COORDINATOR_GROUP if target.startswith("coordinator") else int(target[len("group")])
        if action == "kill":
            return f"killed group {group} primary {self.kill_primary(group)} (`heal` starts it again)"
        if action == "pause":
            return f"paused group {group} primary {self.pause_primary(group)} (`heal` unpauses it)"
        self.cut_group(group)
        return f"group {group} cut off from the coordinator (`heal` restores it)"

    @contextmanager
    def faulted(self) -> Iterator[CitusLab]:
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
