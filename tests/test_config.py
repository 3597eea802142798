"""Configuration: precedence, validation, URL checks and password redaction (no database needed)."""

from __future__ import annotations

import re

import pytest

import kit
from kit.app import load_backend
from kit.config import Config, check_url, load_config, redact_url
from kit.errors import ConfigError, UsageError
from kit.storage import iter_backend_names

URL = "postgresql://kit@db.example:5432/app"


def cfg(tmp_path, overrides=None, env=None, **kw) -> Config:
    return load_config(overrides or {}, env=env if env is not None else {}, cwd=tmp_path, **kw)


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence -----------------------------------------------------------------------------------------


def test_defaults(tmp_path):
    c = cfg(tmp_path)
    assert c == Config()
    assert c.database_url is None and c.schema == "kit" and c.lease_seconds == 10.0
    assert c.effective_pool_size == c.worker_concurrency + 4


def test_precedence_argument_env_kit_toml_pyproject_default(tmp_path):
    assert cfg(tmp_path).lease_seconds == 10.0  # default
    write(tmp_path / "pyproject.toml", "[project]\nname='x'\n[tool.kit]\nlease_seconds = 20\nschema = 'from_py'\n")
    assert cfg(tmp_path).lease_seconds == 20.0
    assert cfg(tmp_path).schema == "from_py"
    write(tmp_path / "kit.toml", "lease_seconds = 30\n")
    c = cfg(tmp_path)
    assert c.lease_seconds == 30.0
    assert c.schema == "kit", "kit.toml is used instead of [tool.kit], not merged with it"
    env = {"KIT_LEASE_SECONDS": "40"}
    assert cfg(tmp_path, env=env).lease_seconds == 40.0
    assert cfg(tmp_path, {"lease_seconds": 50}, env=env).lease_seconds == 50.0
    # None means "not given" for an argument: the lower layers still apply.
    assert cfg(tmp_path, {"lease_seconds": None}, env=env).lease_seconds == 40.0


def test_layers_combine_per_setting(tmp_path):
    write(tmp_path / "kit.toml", "schema = 'from_file'\nworker_concurrency = 3\npoll_seconds = 0.5\n")
    c = cfg(tmp_path, {"poll_seconds": 0.25}, env={"KIT_WORKER_CONCURRENCY": "7", "KIT_APP_VERSION": "v2"})
    assert (c.schema, c.worker_concurrency, c.poll_seconds, c.app_version) == ("from_file", 7, 0.25, "v2")


def test_kit_toml_may_use_a_kit_table(tmp_path):
    write(tmp_path / "kit.toml", f"[kit]\ndatabase_url = '{URL}'\nnotify = false\n")
    c = cfg(tmp_path)
    assert c.database_url == URL and c.notify is False


def test_pyproject_without_tool_kit_is_ignored(tmp_path):
    write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n[tool.other]\nlease_seconds = 'bad'\n")
    assert cfg(tmp_path) == Config()


def test_explicit_config_file_and_kit_config_env(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    write(other / "settings.toml", "schema = 'explicit'\n")
    write(tmp_path / "kit.toml", "schema = 'local'\n")
    assert cfg(tmp_path).schema == "local"
    assert cfg(tmp_path, config_file=other / "settings.toml").schema == "explicit"
    assert cfg(tmp_path, env={"KIT_CONFIG": str(other / "settings.toml")}).schema == "explicit"
    with pytest.raises(ConfigError, match="does not exist"):
        cfg(tmp_path, config_file=tmp_path / "missing.toml")


def test_env_values_are_coerced(tmp_path):
    env = {"KIT_NOTIFY": "off", "KIT_MIGRATE": "0", "KIT_WORKER_CONCURRENCY": " 5 ",
           "KIT_HEARTBEAT_SECONDS": "1.5", "KIT_DATABASE_URL": URL, "KIT_SCHEMA": ""}
    c = cfg(tmp_path, env=env)
    assert c.notify is False and c.migrate is False and c.worker_concurrency == 5
    assert c.heartbeat_seconds == 1.5 and c.database_url == URL
    assert c.schema == "kit", "an empty variable counts as unset"
    assert cfg(tmp_path, env={"KIT_NOTIFY": "Yes"}).notify is True


@pytest.mark.parametrize("env, setting", [
    ({"KIT_NOTIFY": "maybe"}, "KIT_NOTIFY"),
    ({"KIT_LEASE_SECONDS": "ten"}, "KIT_LEASE_SECONDS"),
    ({"KIT_WORKER_CONCURRENCY": "2.5"}, "KIT_WORKER_CONCURRENCY"),
])
def test_bad_env_values_name_the_variable(tmp_path, env, setting):
    with pytest.raises(ConfigError, match=setting):
        cfg(tmp_path, env=env)


# -- bad files and values ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, setting", [
    ("lease_seconds = 'abc'", "lease_seconds"),
    ("lease_seconds = true", "lease_seconds"),
    ("worker_concurrency = [1]", "worker_concurrency"),
    ("worker_concurrency = 'many'", "worker_concurrency"),
    ("schema = 5", "schema"),
    ("database_url = 42", "database_url"),
    ("migrate = 1", "migrate"),
    ("notify = 'perhaps'", "notify"),
    ("poll_seconds = {a = 1}", "poll_seconds"),
])
def test_bad_types_in_kit_toml(tmp_path, line, setting):
    path = write(tmp_path / "kit.toml", line + "\n")
    with pytest.raises(ConfigError) as info:
        cfg(tmp_path)
    assert setting in str(info.value)
    assert str(path) in str(info.value), "the error names the file the value came from"


def test_bad_type_in_pyproject_names_tool_kit(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.kit]\nlease_seconds = 'soon'\n")
    with pytest.raises(ConfigError, match=r"\[tool\.kit\]"):
        cfg(tmp_path)


def test_unknown_setting_in_file_or_argument(tmp_path):
    write(tmp_path / "kit.toml", "lease_secs = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'lease_secs'"):
        cfg(tmp_path)
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        cfg(tmp_path / "..", {"colour": "blue"})


def test_malformed_toml(tmp_path):
    write(tmp_path / "kit.toml", "lease_seconds = = 3\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        cfg(tmp_path)


def test_bad_argument_types(tmp_path):
    with pytest.raises(ConfigError, match="lease_seconds"):
        cfg(tmp_path, {"lease_seconds": "fast"})
    with pytest.raises(ConfigError, match="migrate"):
        cfg(tmp_path, {"migrate": "sometimes"})
    with pytest.raises(ConfigError, match="worker_concurrency"):
        cfg(tmp_path, {"worker_concurrency": True})


@pytest.mark.parametrize("name", ["Kit", "1abc", "a-b", "a" * 59, "", "kit; drop", "schéma", "my schema", "a.b"])
def test_invalid_schema_names(tmp_path, name):
    with pytest.raises(ConfigError, match="schema"):
        cfg(tmp_path, {"schema": name})


@pytest.mark.parametrize("name", ["kit", "_kit", "kit_2", "a" * 58])
def test_valid_schema_names(tmp_path, name):
    assert cfg(tmp_path, {"schema": name}).schema == name


def test_heartbeat_must_be_at_most_half_the_lease(tmp_path):
    with pytest.raises(ConfigError, match="heartbeat_seconds"):
        cfg(tmp_path, {"lease_seconds": 4, "heartbeat_seconds": 2.5})
    with pytest.raises(ConfigError, match="heartbeat_seconds"):
        cfg(tmp_path, {"lease_seconds": 1, "heartbeat_seconds": 0.6})
    assert cfg(tmp_path, {"lease_seconds": 5, "heartbeat_seconds": 2.5}).heartbeat_seconds == 2.5
    assert cfg(tmp_path, {"lease_seconds": 1, "heartbeat_seconds": 0.3}).lease_seconds == 1.0


@pytest.mark.parametrize("overrides, setting", [
    ({"lease_seconds": 0}, "lease_seconds"),
    ({"poll_seconds": -1}, "poll_seconds"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"db_retry_seconds": -0.5}, "db_retry_seconds"),
    ({"worker_concurrency": 0}, "worker_concurrency"),
    ({"pool_size": -1}, "pool_size"),
])
def test_out_of_range_values(tmp_path, overrides, setting):
    with pytest.raises(ConfigError, match=setting):
        cfg(tmp_path, overrides)


def test_config_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        cfg(tmp_path, {"schema": "Bad"})
    with pytest.raises(ConfigError):
        kit.Kit(database_url=URL, lease_seconds=1, heartbeat_seconds=1)  # never touches the database


# -- URLs and backends ------------------------------------------------------------------------------


@pytest.mark.parametrize("url, scheme", [
    ("postgresql://kit@db:5432/app", "postgresql"),
    ("postgres://kit:pw@db/app", "postgres"),
    ("POSTGRESQL://kit@db/app", "postgresql"),
    ("postgresql:///app?host=/var/run/postgresql", "postgresql"),
    ("postgresql://u@h1:5432,h2:5433/app?target_session_attrs=read-write", "postgresql"),
    ("postgresql://kit@[::1]:5432/app", "postgresql"),
    # config checks syntax only: which backend takes a scheme is kit.registry's business
    ("cockroachdb://root@crdb:26257/defaultdb", "cockroachdb"),
    ("citus://postgres@coordinator:5432/app", "citus"),
    ("mysql://root:hunter2@db:3306/app", "mysql"),
    ("sqlite:///tmp/x.db", "sqlite"),
])
def test_valid_url_syntax(url, scheme):
    assert check_url(url) == scheme


@pytest.mark.parametrize("url, fragment", [
    ("localhost:5432/app", "scheme"),
    ("db.example/app", "scheme"),
    ("just-a-name", "scheme"),
    ("postgresql://kit:hunter2@db:notaport/app", "malformed"),
    ("postgresql://kit:hunter2@db:99999/app", "malformed"),
    ("", "empty"),
    ("   ", "empty"),
])
def test_malformed_urls(tmp_path, url, fragment):
    with pytest.raises(ConfigError) as info:
        check_url(url)
    assert fragment in str(info.value)
    assert "hunter2" not in str(info.value), "error messages never show the password"
    with pytest.raises(ConfigError):
        cfg(tmp_path, {"database_url": url})


def test_malformed_url_from_env_is_rejected(tmp_path):
    with pytest.raises(ConfigError):
        cfg(tmp_path, env={"KIT_DATABASE_URL": "db.example:5432"})


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db:3306/app", "sqlite:///tmp/x.db",
                                 "oracle://scott:hunter2@db:1521/app"])
def test_unknown_scheme_is_a_registry_error_listing_installed_schemes(tmp_path, url):
    c = cfg(tmp_path, {"database_url": url})  # syntax is fine
    with pytest.raises(ConfigError) as info:
        load_backend(c)
    msg = str(info.value)
    assert f"no installed backend takes {url.split(':')[0]}:// URLs" in msg
    assert "installed schemes: " in msg and re.search(r"postgresql:// \([^)]*\bpostgres\)", msg)
    assert "hunter2" not in msg and "\n" not in msg


def test_postgres_urls_need_a_host(tmp_path):
    with pytest.raises(ConfigError, match="no host"):
        load_backend(cfg(tmp_path, {"database_url": "postgresql:///app"}))


def test_unknown_backend_names_installed_backends(tmp_path):
    installed = list(iter_backend_names())
    assert "postgres" in installed
    with pytest.raises(ConfigError) as info:
        load_backend(cfg(tmp_path, {"backend": "oracle", "database_url": URL}))
    msg = str(info.value)
    assert "oracle" in msg
    for name in installed:
        assert name in msg


def test_unknown_backend_without_url_fails_before_starting_the_embedded_server(tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'oracle'; installed backends: .*postgres"):
        load_backend(cfg(tmp_path, {"backend": "oracle"}))
    assert not (tmp_path / ".kit").exists()


def test_explicit_backend_must_take_the_url_scheme(tmp_path):
    with pytest.raises(ConfigError, match="backend 'postgres' does not take citus:// URLs"):
        load_backend(cfg(tmp_path, {"backend": "postgres", "database_url": "citus://postgres@coordinator/app"}))


def test_postgres_backend_is_built_from_config(tmp_path, monkeypatch):
    from kit.backends.postgres import PostgresBackend

    import kit.registry as registry

    # PostgreSQL as the only backend of its scheme (with others installed, the server is probed first).
    monkeypatch.setattr(registry, "_discovered", lambda: ({"postgres": PostgresBackend}, ()))
    c = cfg(tmp_path, {"database_url": URL, "schema": "app_kit", "pool_size": 3, "notify": False})
    backend = load_backend(c)  # not opened: no connection is made
    assert isinstance(backend, PostgresBackend)
    assert backend.schema == "app_kit" and backend.url == URL and backend.use_notify is False


def test_embedded_default_resolves_through_the_registry_without_starting(tmp_path):
    from kit.backends.postgres import PostgresBackend

    backend = load_backend(cfg(tmp_path, {}), start_embedded=False)
    assert type(backend) is PostgresBackend
    assert not (tmp_path / ".kit").exists()


def test_core_names_no_backend():
    """Backend names and schemes live in the backends and the registry's discovery, not in core modules."""
    import re
    from pathlib import Path

    core = Path(kit.__file__).parent
    offenders = []
    # kit/lab drives two concrete lab clusters (a Patroni PostgreSQL one and a Patroni Citus one): naming
    # their databases is not choosing a backend.
    for path in sorted(p for p in core.rglob("*.py") if p.parent.name != "lab"):
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"[\"'](postgres|citus|cockroachdb)[\"']", line) or "kit.backends.postgres" in line:
                offenders.append(f"{path.relative_to(core)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# -- redaction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, expected", [
    ("postgresql://kit:s3cret@db:5432/app", "postgresql://kit:***@db:5432/app"),
    ("postgresql://kit:p%40ss%3Aword@db/app", "postgresql://kit:***@db/app"),
    ("postgresql://kit:pa:ss@db/app", "postgresql://kit:***@db/app"),
    ("postgresql://kit:@db/app", "postgresql://kit:***@db/app"),
    ("postgresql://kit@db/app?password=s3cret&sslmode=require",
     "postgresql://kit@db/app?password=***&sslmode=require"),
    ("postgresql://kit@db/app?sslmode=require&PASSWORD=s3cret", "postgresql://kit@db/app?sslmode=require&PASSWORD=***"),
    ("host=db user=kit password=s3cret dbname=app", "host=db user=kit password=*** dbname=app"),
    ("password=s3cret host=db", "password=*** host=db"),
    ("postgresql://kit@db:5432/app", "postgresql://kit@db:5432/app"),
    ("postgresql:///app?host=/tmp/sock", "postgresql:///app?host=/tmp/sock"),
])
def test_redact_url(url, expected):
    out = redact_url(url)
    assert out == expected
    assert "s3cret" not in out and "p%40ss" not in out


def test_redact_url_handles_non_strings():
    assert redact_url(None) == "<invalid>"  # type: ignore[arg-type]
    assert redact_url(42) == "<invalid>"  # type: ignore[arg-type]


def test_redacted_url_in_malformed_url_error():
    with pytest.raises(ConfigError) as info:
        check_url("postgresql://kit:topsecret@db:70000/app")
    assert "topsecret" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("url", [
    "postgresql://kit@h1:5432,h2:notaport/app",
    "postgresql://kit@h1:5432,h2:70000/app",
])
def test_multi_host_urls_check_every_port(url):
    with pytest.raises(ConfigError, match="malformed"):
        check_url(url)
