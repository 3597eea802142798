"""Size limits on stored values: a clear error naming the limit and its setting, and nothing written."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

import kit
from kit.config import load_config
from kit.errors import ConfigError, LimitExceededError
from kit.storage import Status
from kit.validation import check_size

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

LIMIT = 1000


def _count(url: str, schema: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                                         sql.Identifier(table))).fetchone()[0]


def test_defaults_and_settings() -> None:
    cfg = load_config({}, env={})
    assert cfg.max_input_bytes == cfg.max_output_bytes == cfg.max_message_bytes == cfg.max_event_bytes == 16 << 20
    cfg = load_config({"max_output_bytes": 10}, env={"KIT_MAX_INPUT_BYTES": "2048"})
    assert (cfg.max_input_bytes, cfg.max_output_bytes) == (2048, 10)
    for bad in ("0", "-1", str(1 << 30), "lots", "1.5"):
        with pytest.raises(ConfigError, match="max_message_bytes"):
            load_config({}, env={"KIT_MAX_MESSAGE_BYTES": bad})


def test_check_size_counts_utf8_bytes_and_names_the_setting() -> None:
    cfg = load_config({"max_event_bytes": 10}, env={})
    assert check_size("x" * 10, cfg, "max_event_bytes", "v") == "x" * 10
    assert check_size(None, cfg, "max_event_bytes", "v") is None
    with pytest.raises(LimitExceededError) as info:
        check_size("é" * 6, cfg, "max_event_bytes", "event 'k'")  # 6 characters, 12 bytes
    err = info.value
    assert (err.setting, err.limit, err.size) == ("max_event_bytes", 10, 12)
    assert "event 'k'" in str(err) and "max_event_bytes" in str(err) and "KIT_MAX_EVENT_BYTES" in str(err)
    assert isinstance(err, kit.SerializationError) and isinstance(err, kit.UsageError)


@pytest.fixture
def app(pg_url: str, schema: str):
    a = kit.Kit(pg_url, schema=schema, max_input_bytes=LIMIT, max_output_bytes=LIMIT, max_message_bytes=LIMIT,
                max_event_bytes=LIMIT, poll_seconds=0.2)
    a.backend  # noqa: B018 - migrate now, so "no rows" below is a real count
    yield a
    a.close()


def test_oversized_inputs_are_refused_before_any_write(app: kit.Kit, pg_url: str, schema: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    @app.workflow(name="lim.echo")
    def echo(text: str) -> str:
        return text

    big = "x" * LIMIT
    for submit in (lambda: app.start(echo, big, workflow_id="lim-start"),
                   lambda: app.enqueue(echo, big, workflow_id="lim-enqueue"),
                   lambda: app.start(echo, "é" * (LIMIT // 2), workflow_id="lim-utf8")):
        with pytest.raises(LimitExceededError, match="inputs of workflow 'lim.echo'.*max_input_bytes"):
            submit()
    monkeypatch.setenv("KIT_MAX_INPUT_BYTES", str(LIMIT))
    client = kit.Client(pg_url, schema=schema)
    try:
        with pytest.raises(LimitExceededError, match="max_input_bytes"):
            client.enqueue("lim.echo", big, workflow_id="lim-client")
    finally:
        client.close()
    assert _count(pg_url, schema, "workflows") == 0
    assert app.start(echo, "small").result(timeout=30) == "small"


def test_oversized_outputs_messages_events_and_stream_elements(app: kit.Kit, pg_url: str, schema: str) -> None:
    ident = sql.Identifier(schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.sales (n int)").format(ident))

    @app.step(name="lim.big_step")
    def big_step() -> str:
        return "y" * LIMIT

    @app.transaction(name="lim.big_tx")
    def big_tx(conn) -> str:
        conn.execute(sql.SQL("INSERT INTO {}.sales VALUES (1)").format(ident))
        return "z" * LIMIT

    @app.workflow(name="lim.step")
    def step_wf() -> str:
        try:
            big_step()
        except LimitExceededError as exc:
            return f"step refused: {exc.setting}"
        return "stored"

    @app.workflow(name="lim.tx")
    def tx_wf() -> None:
        big_tx()

    @app.workflow(name="lim.result")
    def result_wf() -> str:
        return "r" * LIMIT

    @app.workflow(name="lim.event")
    def event_wf() -> None:
        app.set_event("k", "e" * LIMIT)

    @app.workflow(name="lim.stream")
    def stream_wf() -> None:
        app.write_stream("s", "s" * LIMIT)

    @app.workflow(name="lim.inbox")
    def inbox() -> object:
        return app.recv(timeout=0.5)

    assert app.start(step_wf).result(timeout=30) == "step refused: max_output_bytes"
    for wf, setting in ((tx_wf, "max_output_bytes"), (result_wf, "max_output_bytes"),
                        (event_wf, "max_event_bytes"), (stream_wf, "max_event_bytes")):
        handle = app.start(wf)
        with pytest.raises(kit.WorkflowError, match=setting):
            handle.result(timeout=30)
        assert handle.status() == Status.ERROR
    box = app.start(inbox)
    with pytest.raises(LimitExceededError, match="message to workflow .*max_message_bytes"):
        app.send(box.workflow_id, "m" * LIMIT)
    assert box.result(timeout=30) is None
    # Nothing oversized was written anywhere, and the transactional step's own write rolled back.
    assert _count(pg_url, schema, "sales") == 0
    for table in ("messages", "events", "streams"):
        assert _count(pg_url, schema, table) == 0, table
    with psycopg.connect(pg_url) as conn:
        longest = conn.execute(sql.SQL(
            "SELECT max(greatest(octet_length(output), octet_length(inputs))) FROM {}.workflows").format(ident)
        ).fetchone()[0]
        longest_step = conn.execute(sql.SQL("SELECT max(octet_length(output)) FROM {}.steps").format(ident)
                                    ).fetchone()[0]
    assert longest is None or longest < LIMIT
    assert longest_step is None or longest_step < LIMIT


def test_a_value_at_the_limit_is_stored(app: kit.Kit) -> None:
    @app.workflow(name="lim.exact")
    def exact(text: str) -> str:
        return text

    from kit import serialization as ser

    text = "a" * (LIMIT - len(ser.encode_args(("",), {}, what="x")))
    assert len(ser.encode_args((text,), {}, what="x").encode()) == LIMIT
    assert app.start(exact, text).result(timeout=30) == text
    with pytest.raises(LimitExceededError):
        app.start(exact, text + "a")
