"""``kit lab`` finds the lab's compose files in a checkout, or says in one line where to look.

No test here reaches Docker: every command exercised fails on the compose files before it would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.cli import main
from kit.lab import host
from kit.lab.host import LabUnavailable, find_compose_dir

REPO = Path(__file__).resolve().parents[1]
CHECKOUT_COMPOSE = REPO / "compose" / "postgres-ha"


def test_the_checkout_s_compose_files_are_found_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_LAB_COMPOSE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the current directory: the checkout kit runs from
    assert find_compose_dir() == CHECKOUT_COMPOSE.resolve()


@pytest.mark.parametrize("given", [CHECKOUT_COMPOSE, CHECKOUT_COMPOSE.parent])
def test_a_given_directory_may_be_the_cluster_s_or_the_compose_folder(given):
    assert find_compose_dir(given) == CHECKOUT_COMPOSE.resolve()


def test_an_installed_kit_without_a_checkout_says_where_to_look(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_LAB_COMPOSE_DIR", raising=False)
    monkeypatch.setattr(host, "__file__", str(tmp_path / "site-packages" / "kit" / "lab" / "host.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabUnavailable, match=r"compose files \(compose/postgres-ha\) are not here.*--compose-dir"):
        find_compose_dir()


def test_the_environment_setting_is_named_when_it_points_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("KIT_LAB_COMPOSE_DIR", str(tmp_path))
    with pytest.raises(LabUnavailable, match=r"KIT_LAB_COMPOSE_DIR"):
        find_compose_dir()


@pytest.mark.parametrize("action", ["up", "down"])
def test_lab_up_and_down_without_compose_files_are_one_line_usage_errors(action, tmp_path, capsys):
    assert main(["lab", action, "--compose-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kit: error: chaos lab unavailable: no docker-compose.yml of the lab (postgres-ha) in ")
    assert err.count("\n") == 1 and "Traceback" not in err


# -- the CockroachDB lab (compose/cockroachdb) --------------------------------------------------------------

def test_the_cockroachdb_lab_s_compose_files_are_found():
    assert find_compose_dir(cluster="cockroachdb") == (REPO / "compose" / "cockroachdb").resolve()
    assert find_compose_dir(REPO / "compose", cluster="cockroachdb") == (REPO / "compose" / "cockroachdb").resolve()


def test_the_cockroachdb_lab_never_pulls_its_image(monkeypatch):
    """Before anything starts, a missing image (or engine) is a one-line reason, never a pull."""
    from kit.lab import cockroach

    monkeypatch.setattr(cockroach, "engine_problem", lambda: None)

    class Images:
        def get(self, name):
            import docker

            raise docker.errors.ImageNotFound(name)

    class Client:
        images = Images()

    lab = cockroach.CockroachLab()
    lab._docker = Client()
    monkeypatch.setenv("KIT_COCKROACH_LAB_IMAGE", "cockroachdb/cockroach:v99.1.0")
    problem = lab.image_problem()
    assert problem.startswith("the CockroachDB image cockroachdb/cockroach:v99.1.0 is not present locally; "
                              "kit never pulls it")
    compose = (REPO / "compose" / "cockroachdb" / "docker-compose.yml").read_text()
    assert "--insecure" in compose and compose.count("--join=roach1:26257,roach2:26257,roach3:26257") == 3
    assert "init --insecure" in compose


@pytest.mark.parametrize("argv", [["lab", "up", "--cluster", "cockroachdb", "--compose-dir", "/nonexistent"],
                                  ["lab", "fault", "kill-roach1"]])
def test_cockroachdb_lab_commands_fail_in_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "CockroachDB lab unavailable: no docker-compose.yml of the lab (cockroachdb)" in err or \
        "add --cluster cockroachdb" in err
