"""Every `leaderboard` subcommand with each service unreachable and malformed settings; wrong passwords, hung
services and the other faults of the same start-up check on a few commands each (FEW_COMMANDS).

Expected: ONE line on stderr naming the problem, a non-zero exit within 15 s, no traceback, no password in the
output. A command that does not use the broken service must still work. The processes are real (`python -m
leaderboard.cli`, the real Kafka, Redis and PostgreSQL); they run in parallel once per module and each case
asserts on its own result. Malformed settings fail before any command-specific work, so that matrix (every
command x every setting) calls ``cli.main`` in-process, plus a few real processes for it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient
from hypothesis import given
from hypothesis import strategies as st

from consumers.migrate import migrate
from leaderboard import cli, errors, settings
from leaderboard.net import free_port
from leaderboard.settings import Settings, SettingsError
from tests.conftest import env_of, isolated
from tests.services import RedisServer

LIMIT_S = 15.0
K, R, P = "Kafka", "Redis", "PostgreSQL"
PG_PASSWORD = f"pg-wrong-{uuid.uuid4().hex[:8]}"
REDIS_PASSWORD = f"redis-wrong-{uuid.uuid4().hex[:8]}"
KAFKA_PASSWORD = f"sasl-{uuid.uuid4().hex[:8]},with-comma"
DOWN_PASSWORD = f"down-{uuid.uuid4().hex[:8]}"
SECRETS = (PG_PASSWORD, REDIS_PASSWORD, KAFKA_PASSWORD, *KAFKA_PASSWORD.split(","), DOWN_PASSWORD)


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]
    needs: frozenset[str]
    """Services it cannot work without (written here, not read from cli.needs)."""
    boards: bool
    """Reads LEADERBOARD_BOARDS_FILE."""
    long_running: bool = False


COMMANDS = (
    Command("consume", ("consume", "--metrics-port", "0"), frozenset({K, R, P}), True, long_running=True),
    Command("api", ("api", "--port", "0"), frozenset({R, P}), True, long_running=True),
    Command("simulate", ("simulate", "--count", "1"), frozenset({K}), False),
    Command("rebuild-kafka", ("rebuild", "--from", "kafka"), frozenset({K, R, P}), True),
    Command("rebuild-postgres", ("rebuild", "--from", "postgres"), frozenset({R, P}), True),
    Command("verify", ("verify", "--attempts", "1"), frozenset({K, R, P}), True),
    Command("close-period", ("close-period",), frozenset({K, R, P}), True),
    Command("close-period-dry-run", ("close-period", "--dry-run"), frozenset({R, P}), True),
    Command("dlq", ("dlq", "show"), frozenset({K}), False),
    Command("migrate", ("migrate",), frozenset({P}), False),
    Command("moderate", ("moderate", "list"), frozenset({P}), False),
    Command("boards", ("boards", "list"), frozenset({P}), True),
    Command("archive", ("archive", "--to", "/nonexistent/archive-dir"), frozenset({P}), True),
    Command("demo", ("demo", "--duration", "1"), frozenset({K, R, P}), True, long_running=True),
)


@dataclass(frozen=True)
class Fault:
    name: str
    service: str | None
    """The service the fault breaks (commands that do not need it must succeed); None: the boards file."""
    exit_code: int
    mentions: tuple[str, ...]


FAULTS = (
    Fault("kafka-down", K, errors.EXIT_UNAVAILABLE, ("Kafka", "LEADERBOARD_KAFKA_BOOTSTRAP")),
    Fault("redis-down", R, errors.EXIT_UNAVAILABLE, ("Redis", "LEADERBOARD_REDIS_URL")),
    Fault("postgres-down", P, errors.EXIT_UNAVAILABLE, ("PostgreSQL", "LEADERBOARD_DATABASE_URL")),
    Fault("kafka-hung", K, errors.EXIT_UNAVAILABLE, ("Kafka", "LEADERBOARD_KAFKA_BOOTSTRAP", "metadata")),
    Fault("redis-hung", R, errors.EXIT_UNAVAILABLE, ("Redis", "LEADERBOARD_REDIS_URL", "Timeout")),
    Fault("postgres-hung", P, errors.EXIT_UNAVAILABLE, ("PostgreSQL", "LEADERBOARD_DATABASE_URL", "timeout")),
    Fault("postgres-wrong-password", P, errors.EXIT_CONFIG, ("PostgreSQL", "password", "DATABASE_URL")),
    Fault("redis-wrong-password", R, errors.EXIT_CONFIG, ("Redis", "LEADERBOARD_REDIS_URL", "password")),
    Fault("redis-db-out-of-range", R, errors.EXIT_CONFIG, ("Redis", "LEADERBOARD_REDIS_URL", "database")),
    Fault("boards-not-utf8", None, errors.EXIT_CONFIG, ("LEADERBOARD_BOARDS_FILE", "UTF-8")),
    Fault("boards-not-tables", None, errors.EXIT_CONFIG, ("LEADERBOARD_BOARDS_FILE", "[[board]]")),
)


class Hung:
    """A server that accepts connections and never answers: a frozen service, as the client sees it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    elapsed: float


@dataclass
class World:
    env: dict[str, str]
    """A healthy, isolated environment (own topics, group, Redis prefix, PostgreSQL schema)."""
    fault_env: dict[str, dict[str, str]]


def _run(argv: tuple[str, ...], env: dict[str, str]) -> Result:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _argv(command: Command) -> tuple[str, ...]:
    if command.name == "api":
        return ("api", "--port", str(free_port()))
    return command.argv


SUCCESS_FAULTS = frozenset({"kafka-down", "redis-down", "postgres-down", "boards-not-utf8"})
"""Faults under which the commands that do not need the broken part are run to show they still work (for
the other faults of the same service, or of the boards file, that run would repeat the same code path)."""


FEW_COMMANDS = {
    "kafka-hung": {"consume", "dlq"},
    "redis-hung": {"api", "verify"},
    "postgres-hung": {"consume", "migrate"},
    "postgres-wrong-password": {"consume", "moderate"},
    "redis-wrong-password": {"api", "rebuild-postgres"},
    "redis-db-out-of-range": {"verify", "close-period-dry-run"},
    "boards-not-tables": {"api", "archive"},
}
"""Faults shown by a few commands. Each differs from its service's ``-down`` fault (the boards file's: from
boards-not-utf8) only in how the start-up check words it, and that check is one code path for every command
(``cli.main``: ``boards.load``, then ``probe.require``). The ``-down`` faults and boards-not-utf8 run every
command: they are what proves each command's ``needs()`` and ``BOARD_COMMANDS``."""


def _case_ids() -> list[tuple[Command, Fault]]:
    # A long-running command that does not need the broken service would run until stopped: not a case.
    return [
        (c, f)
        for c in COMMANDS
        for f in FAULTS
        if (_fails(c, f) and c.name in FEW_COMMANDS.get(f.name, {c.name}))
        or (f.name in SUCCESS_FAULTS and not c.long_running)
    ]


def _fails(command: Command, fault: Fault) -> bool:
    return command.boards if fault.service is None else fault.service in command.needs


@pytest.fixture(scope="module")
def world(
    base_settings: Settings, admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with isolated(base_settings, admin, (3, 1, 1)) as cfg:
        tag = cfg.redis_prefix
        with psycopg.connect(cfg.database_url, autocommit=True) as conn:
            migrate(conn)
        env = {
            k: v
            for k, v in env_of(cfg).items()
            if not k.startswith("LEADERBOARD_") or k in settings.env_names().values()
        }
        env["LEADERBOARD_STACK_DIR"] = str(tmp_path_factory.mktemp("stack"))
        private = RedisServer()
        hung = [Hung(), Hung(), Hung()]
        try:
            private.start()
            with redis.Redis.from_url(private.url) as r:
                r.config_set("requirepass", f"right-{tag}")
            files = tmp_path_factory.mktemp("boards")
            not_utf8 = files / "latin1.toml"
            not_utf8.write_bytes('[[board]]\nid = "global"\ntimezone = "Europe/Zürich"\n'.encode("latin-1"))
            not_tables = files / "list.toml"
            not_tables.write_text("board = [1, 2]\n")
            down_pg = f"postgresql://leaderboard:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/leaderboard"
            pg_wrong = base_settings.database_url.replace(
                "leaderboard:leaderboard@", f"leaderboard:{PG_PASSWORD}@"
            )
            assert pg_wrong != base_settings.database_url, "expected the stack's user:password in the URL"
            redis_db = cfg.redis_url.rsplit("/", 1)[0] + "/99"
            fault_env = {
                "kafka-down": {"LEADERBOARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
                "redis-down": {
                    "LEADERBOARD_REDIS_URL": f"redis://:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/0"
                },
                "postgres-down": {"LEADERBOARD_DATABASE_URL": down_pg},
                "kafka-hung": {"LEADERBOARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{hung[0].port}"},
                "redis-hung": {
                    "LEADERBOARD_REDIS_URL": f"redis://:{DOWN_PASSWORD}@127.0.0.1:{hung[1].port}/0"
                },
                "postgres-hung": {
                    "LEADERBOARD_DATABASE_URL": f"postgresql://leaderboard:{DOWN_PASSWORD}@127.0.0.1:{hung[2].port}/lb"
                },
                "postgres-wrong-password": {"LEADERBOARD_DATABASE_URL": pg_wrong},
                "redis-wrong-password": {
                    "LEADERBOARD_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{private.port}/0"
                },
                "redis-db-out-of-range": {"LEADERBOARD_REDIS_URL": redis_db},
                "boards-not-utf8": {"LEADERBOARD_BOARDS_FILE": str(not_utf8)},
                "boards-not-tables": {"LEADERBOARD_BOARDS_FILE": str(not_tables)},
            }
            # verify compares against a live generation: make one first (an empty event log).
            prepared = _run(("rebuild", "--from", "postgres"), env)
            assert prepared.code == 0, prepared.stderr
            yield World(env, fault_env)
        finally:
            for server in hung:
                server.close()
            private.cleanup()


def assert_clean(result: Result) -> None:
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both[-2000:]
    for secret in SECRETS:
        assert secret not in both, f"secret {secret!r} printed: {both[-2000:]}"
    assert result.elapsed < LIMIT_S, f"took {result.elapsed:.1f} s"


def assert_one_line(result: Result, command: str, mentions: tuple[str, ...]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr[-2000:]}"
    line = lines[0]
    assert line.startswith(f"leaderboard {command}: "), line
    for word in mentions:
        assert word in line, f"{word!r} not in {line!r}"
    return line


@pytest.fixture(scope="module")
def results(world: World) -> dict[tuple[str, str], Result]:
    """Every case of the matrix, run once, in parallel."""
    with ThreadPoolExecutor(4) as pool:
        futures = {
            (c.name, f.name): pool.submit(_run, _argv(c), {**world.env, **world.fault_env[f.name]})
            for c, f in _case_ids()
        }
    return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize(
    ("command", "fault"), _case_ids(), ids=[f"{c.name}-{f.name}" for c, f in _case_ids()]
)
def test_service_faults(results: dict[tuple[str, str], Result], command: Command, fault: Fault) -> None:
    result = results[(command.name, fault.name)]
    assert_clean(result)
    if _fails(command, fault):
        assert result.code == fault.exit_code, result.stderr
        assert_one_line(result, command.argv[0], fault.mentions)
    else:
        # It does not use what is broken: it works as usual and says nothing about it.
        assert result.code == 0, result.stderr[-2000:]
        for word in fault.mentions:
            assert word not in result.stderr, result.stderr[-2000:]


def test_api_starts_without_kafka(world: World) -> None:
    """The API reads Redis and PostgreSQL only (ingest off): Kafka down does not stop it from serving."""
    port = free_port()
    env = {**world.env, **world.fault_env["kafka-down"], "LEADERBOARD_INGEST_TOKEN": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leaderboard.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + LIMIT_S
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the API did not answer /healthz within 15 s"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(15)


def test_api_with_ingest_needs_kafka(world: World) -> None:
    env = {
        **world.env,
        **world.fault_env["kafka-down"],
        "LEADERBOARD_INGEST_TOKEN": "tok-" + uuid.uuid4().hex,
    }
    result = _run(("api", "--port", str(free_port())), env)
    assert_clean(result)
    assert result.code == errors.EXIT_UNAVAILABLE
    assert_one_line(result, "api", ("Kafka", "LEADERBOARD_KAFKA_BOOTSTRAP"))
    assert env["LEADERBOARD_INGEST_TOKEN"] not in result.stderr


# -- malformed settings: every command, in-process --------------------------------------------------------


def _malformed(tmp: Path) -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    """name -> (environment, words the line must hold). Each one is rejected by settings.load."""
    bad_props = tmp / "bad.properties"
    bad_props.write_text(f"# SASL\nsasl.password={KAFKA_PASSWORD}\nno equals sign here\n")
    bad_key = tmp / "bad-key.properties"
    bad_key.write_text(f"sasl.password={KAFKA_PASSWORD}\nno.such.property=1\n")
    latin1 = tmp / "latin1.properties"
    latin1.write_bytes("client.id=caf\xe9\n".encode("latin-1"))
    pg = f"postgresq://leaderboard:{DOWN_PASSWORD}@127.0.0.1:5432/leaderboard"
    return {
        "database-url-scheme": (
            {"LEADERBOARD_DATABASE_URL": pg},
            ("LEADERBOARD_DATABASE_URL", "postgresql://"),
        ),
        "redis-url-scheme": (
            {"LEADERBOARD_REDIS_URL": f"rdis://:{DOWN_PASSWORD}@127.0.0.1:6379/0"},
            ("LEADERBOARD_REDIS_URL", "redis://"),
        ),
        "redis-url-port": (
            {"LEADERBOARD_REDIS_URL": f"redis://:{DOWN_PASSWORD}@127.0.0.1:63x79/0"},
            ("LEADERBOARD_REDIS_URL", "Port"),
        ),
        "redis-url-db": (
            {"LEADERBOARD_REDIS_URL": f"redis://:{DOWN_PASSWORD}@127.0.0.1:6379/zero"},
            ("LEADERBOARD_REDIS_URL", "database number"),
        ),
        "kafka-config-bad-key": (
            {"LEADERBOARD_KAFKA_CONFIG": f"sasl.password={DOWN_PASSWORD},no.such.property=1"},
            ("LEADERBOARD_KAFKA_CONFIG", "no.such.property"),
        ),
        "kafka-config-not-kv": (
            {"LEADERBOARD_KAFKA_CONFIG": f"sasl.password={KAFKA_PASSWORD}"},
            ("LEADERBOARD_KAFKA_CONFIG", "item 2", "LEADERBOARD_KAFKA_CONFIG_FILE"),
        ),
        "kafka-config-bad-value": (
            {"LEADERBOARD_KAFKA_CONFIG": "acks=lots"},
            ("LEADERBOARD_KAFKA_CONFIG", "acks"),
        ),
        "kafka-config-file-missing": (
            {"LEADERBOARD_KAFKA_CONFIG_FILE": str(tmp / "absent.properties")},
            ("LEADERBOARD_KAFKA_CONFIG_FILE", "absent.properties"),
        ),
        "kafka-config-file-syntax": (
            {"LEADERBOARD_KAFKA_CONFIG_FILE": str(bad_props)},
            ("LEADERBOARD_KAFKA_CONFIG_FILE", "line 3"),
        ),
        "kafka-config-file-bad-key": (
            {"LEADERBOARD_KAFKA_CONFIG_FILE": str(bad_key)},
            ("LEADERBOARD_KAFKA_CONFIG_FILE", "no.such.property"),
        ),
        "kafka-config-file-not-utf8": (
            {"LEADERBOARD_KAFKA_CONFIG_FILE": str(latin1)},
            ("LEADERBOARD_KAFKA_CONFIG_FILE", "UTF-8"),
        ),
        "kafka-bootstrap": (
            {"LEADERBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:port"},
            ("LEADERBOARD_KAFKA_BOOTSTRAP", "host:port"),
        ),
        "boards-file-missing": (
            {"LEADERBOARD_BOARDS_FILE": str(tmp / "absent.toml")},
            ("LEADERBOARD_BOARDS_FILE", "no such file"),
        ),
        "batch-size": ({"LEADERBOARD_BATCH_SIZE": "many"}, ("LEADERBOARD_BATCH_SIZE", "integer")),
        "api-port": ({"LEADERBOARD_API_PORT": "99999"}, ("LEADERBOARD_API_PORT", "65535")),
        "log-level": ({"LEADERBOARD_LOG_LEVEL": "loud"}, ("LEADERBOARD_LOG_LEVEL", "DEBUG")),
        "topic": ({"LEADERBOARD_TOPIC": "a topic"}, ("LEADERBOARD_TOPIC", "letters")),
        "auto-close": (
            {"LEADERBOARD_AUTO_CLOSE_PERIODS": "maybe"},
            ("LEADERBOARD_AUTO_CLOSE_PERIODS", "true"),
        ),
    }


with tempfile.TemporaryDirectory() as _scratch:
    MALFORMED_NAMES = sorted(_malformed(Path(_scratch)))


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed_settings_every_command(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env, mentions = _malformed(tmp_path)[name]
    for var in list(os.environ):
        if var.startswith("LEADERBOARD_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for command in COMMANDS:
        started = time.monotonic()
        code = cli.main(list(command.argv))
        captured = capsys.readouterr()
        result = Result(code, captured.out, captured.err, time.monotonic() - started)
        assert_clean(result)
        assert code == errors.EXIT_CONFIG, (command.name, captured.err)
        assert_one_line(result, command.argv[0], mentions)


@pytest.mark.parametrize("name", ["database-url-scheme", "kafka-config-file-bad-key", "kafka-config-not-kv"])
def test_malformed_settings_real_process(name: str, tmp_path: Path) -> None:
    env, mentions = _malformed(tmp_path)[name]
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    result = _run(("migrate",), {**base, **env})
    assert_clean(result)
    assert result.code == errors.EXIT_CONFIG
    assert_one_line(result, "migrate", mentions)


# -- the pieces: pure logic --------------------------------------------------------------------------------


def test_kafka_config_file_holds_commas_and_inline_wins(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# SASL over TLS\n\n"
        "  sasl.username = svc-leaderboard  \n"
        f"sasl.password={KAFKA_PASSWORD}\n"
        "client.id=from-file\n"
        "linger.ms=7\n"
    )
    config = settings.load(
        {"LEADERBOARD_KAFKA_CONFIG_FILE": str(props), "LEADERBOARD_KAFKA_CONFIG": "client.id=inline"}
    )
    conf = config.kafka_common()
    assert conf["sasl.password"] == KAFKA_PASSWORD
    assert conf["sasl.username"] == "svc-leaderboard"
    assert conf["client.id"] == "inline"
    assert conf["linger.ms"] == "7"
    assert KAFKA_PASSWORD not in repr(config)
    assert KAFKA_PASSWORD in settings.secrets_in({"LEADERBOARD_KAFKA_CONFIG_FILE": str(props)})


def test_secrets_in_finds_every_kind() -> None:
    env = {
        "LEADERBOARD_DATABASE_URL": "postgresql://u:p%40ss@h/db",
        "LEADERBOARD_REDIS_URL": "redis://:rpass@h:6379/0",
        "LEADERBOARD_KAFKA_CONFIG": "sasl.password=kpass,ssl.key.password=keypass,client.id=visible",
        "LEADERBOARD_INGEST_TOKEN": "tokvalue",
        "HOME": "/root",
    }
    found = set(settings.secrets_in(env))
    assert {"p%40ss", "p@ss", "rpass", "kpass", "keypass", "tokvalue"} <= found
    assert "visible" not in found
    assert "/root" not in found


def test_properties_format_errors_name_the_line() -> None:
    with pytest.raises(SettingsError, match="line 2"):
        settings.parse_properties("a=1\nbroken\n", "LEADERBOARD_KAFKA_CONFIG_FILE")
    assert settings.parse_properties("# c\n\nk = a,b=c#d\n", "X") == {"k": "a,b=c#d"}


@given(
    user=st.text(alphabet=st.characters(categories=("L", "N")), max_size=8),
    password=st.text(
        alphabet=st.characters(categories=("L", "N", "P", "S"), exclude_characters="@/?#[]%"),
        min_size=1,
        max_size=16,
    ),
    scheme=st.sampled_from(["postgresql", "postgres", "redis", "rediss", "postgresq", "http"]),
)
def test_mask_url_hides_the_password(user: str, password: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@db.example:5432/name"
    masked = errors.mask_url(url)
    assert f":{password}@" not in masked
    assert masked == f"{scheme}://{user}:***@db.example:5432/name"
    assert password not in errors.redact(f"failed for {url}", [password]) or len(password) < 3
    assert f":{password}@" not in errors.redact(f"failed for {url}", [])


def test_query_passwords_are_secrets_too() -> None:
    url = "postgresql://u@h/db?sslmode=require&password=qpass%2Cx"
    assert errors.mask_url(url) == "postgresql://u@h/db?sslmode=require&password=***"
    assert {"qpass%2Cx", "qpass,x"} <= set(errors.url_secrets(url))
    assert "qpass" not in errors.redact(f"bad dsn: {url}", [])


def test_mask_url_leaves_urls_without_password() -> None:
    for url in ("redis://127.0.0.1:6379/0", "postgresql://u@h/db", "unix:///tmp/redis.sock", "not a url"):
        assert errors.mask_url(url) == url


def test_unexpected_errors_are_one_line_with_a_hint() -> None:
    code, line = errors.explain(RuntimeError("boom\nsecond line"))
    assert code == errors.EXIT_INTERNAL
    assert "\n" not in line
    assert "LEADERBOARD_LOG_LEVEL=DEBUG" in line


def test_every_command_has_its_needs() -> None:
    assert set(cli.COMMANDS) == {c.argv[0] for c in COMMANDS}


def test_unexpected_error_is_one_line_and_debug_adds_the_traceback(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import consumers.migrate  # noqa: PLC0415

    def boom(config: Settings, args: object) -> int:
        raise RuntimeError(f"bug while holding {DOWN_PASSWORD}\nsecond line")

    monkeypatch.setattr(consumers.migrate, "run", boom)
    monkeypatch.setenv("LEADERBOARD_INGEST_TOKEN", DOWN_PASSWORD)
    assert cli.main(["migrate"]) == errors.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("leaderboard migrate: unexpected RuntimeError: bug while holding *** second line")
    assert "LEADERBOARD_LOG_LEVEL=DEBUG" in err
    assert DOWN_PASSWORD not in err

    monkeypatch.setenv("LEADERBOARD_LOG_LEVEL", "DEBUG")
    assert cli.main(["migrate"]) == errors.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err  # asked for: in the JSON log line's "traceback", redacted too
    assert DOWN_PASSWORD not in err
    assert err.strip().splitlines()[-1].startswith("leaderboard migrate: unexpected RuntimeError")


def test_consume_with_its_metrics_port_taken(world: World) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _run(("consume", "--metrics-port", str(port)), world.env)
    assert_clean(result)
    assert result.code == errors.EXIT_CONFIG
    assert_one_line(result, "consume", (f"127.0.0.1:{port}", "LEADERBOARD_CONSUMER_METRICS_PORT"))
