"""What the HA lab needs from this machine: a Docker engine and compose tool, the compose files, images.

The compose files are not part of the installed package: :func:`find_compose_dir` finds
``compose/postgres-ha`` of a kit checkout (or the directory given by ``--compose-dir`` /
``$KIT_LAB_COMPOSE_DIR``) and says in one line where to look when there is none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

COMPOSE_ENV = "KIT_LAB_COMPOSE_DIR"
OFFICIAL_TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
LOCAL_TOXIPROXY_IMAGE = "kit-lab/toxiproxy:2.12.0"


class LabUnavailable(RuntimeError):
    """No Docker engine or compose tool can run the lab on this machine (the reason is the message)."""


class LabError(RuntimeError):
    """The lab cluster did not reach the expected state (message says which and what it saw)."""


def find_compose_dir(explicit: str | Path | None = None, cluster: str = "postgres-ha") -> Path:
    """The directory holding a lab cluster's ``docker-compose.yml`` (``cluster``: ``postgres-ha`` or
    ``citus-ha``): ``explicit`` (``--compose-dir``), else ``$KIT_LAB_COMPOSE_DIR``, else ``compose/<cluster>``
    of the checkout this kit runs from or of the current directory. Each may name that directory or the
    ``compose/`` folder above it. LabUnavailable (one line) when none holds the files: an installed kit has
    no compose files."""
    subdir = Path("compose") / cluster
    given = explicit if explicit is not None else os.environ.get(COMPOSE_ENV)
    if given:
        candidates = [Path(given)]
    else:
        checkout = Path(__file__).resolve().parents[2]  # kit/lab/host.py -> the repository
        candidates = [checkout / subdir, Path.cwd() / subdir]
    for base in candidates:
        # The directory itself (named after the cluster; any name for the default cluster), or the cluster's
        # directory under or beside it (``--compose-dir compose`` or ``compose/postgres-ha`` find both labs).
        own = [base] if base.name == cluster or cluster == "postgres-ha" else []
        for d in (*own, base / cluster, base.parent / cluster):
            if (d / "docker-compose.yml").is_file():
                return d.resolve()
    if given:
        raise LabUnavailable(f"no docker-compose.yml of the lab ({cluster}) in {given} (from "
                             f"{'--compose-dir' if explicit is not None else '$' + COMPOSE_ENV}): give the "
                             f"compose/{cluster} directory of a kit checkout")
    raise LabUnavailable(f"the lab's compose files (compose/{cluster}) are not here: run kit from a checkout of "
                         f"the repository, or pass --compose-dir / set {COMPOSE_ENV} to that directory")


def compose_cmd() -> list[str] | None:
    """The compose tool: Debian's docker-compose (1.29) or the v2 plugin (``docker compose``)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def engine_problem() -> str | None:
    """Why the lab cannot run here (no docker package, no engine, no compose tool), or None if it can."""
    try:
        import docker
    except ImportError:
        return "the python 'docker' package is missing: pip install -e '.[lab]' (scripts/lab-setup.sh does)"
    try:
        import toxiproxy  # noqa: F401
    except ImportError:
        return "the python 'toxiproxy-python' package is missing: pip install -e '.[lab]'"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no Docker engine answers ({first}); run scripts/lab-setup.sh (it starts dockerd)"
    if compose_cmd() is None:
        return "no compose tool (docker-compose or the docker compose plugin); run scripts/lab-setup.sh"
    return None


def toxiproxy_image() -> str:
    """The official toxiproxy image when present locally, else the locally built one (lab-setup.sh)."""
    override = os.environ.get("KIT_LAB_TOXIPROXY_IMAGE")
    if override:
        return override
    import docker

    client = docker.from_env(timeout=30)
    try:
        for image in (OFFICIAL_TOXIPROXY_IMAGE, LOCAL_TOXIPROXY_IMAGE):
            try:
                client.images.get(image)
                return image
            except docker.errors.ImageNotFound:
                continue
    finally:
        client.close()
    return OFFICIAL_TOXIPROXY_IMAGE  # compose pulls it (a laptop with registry access)
