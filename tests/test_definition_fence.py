"""The definition fence against the real Redis: a live write made under another definition version than the
board's live one writes nothing (no score, no watermark, no position), and the flip records the version."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
import redis

from consumers.generations import Generations
from consumers.plan import Canonical
from consumers.redis_sink import DefinitionStale, RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from query_api.store import script_text
from tests.factories import win

AT = datetime.now(UTC).replace(microsecond=0)


def _records(first: int) -> list[Canonical]:
    return [Canonical(0, first + i, win(f"p{i % 3}", AT, 2)) for i in range(6)]


def _state(client: redis.Redis, keys: Keys) -> tuple[object, object, int]:
    """The generation's position, its all_time scores and how many keys it has."""
    return (
        client.hgetall(keys.position("laps", 1)),
        client.zrange(keys.board("laps", 1, "all_time"), 0, -1, withscores=True),
        len(list(client.scan_iter(match=f"{keys.base('laps')}:g1:*"))),
    )


@pytest.mark.parametrize("meta_def", ["2", "retired"])
def test_a_write_under_another_version_is_refused_whole(
    config: Settings, redis_client: redis.Redis, meta_def: str
) -> None:
    keys = Keys(config.redis_prefix)
    v1 = Board(id="laps", periods=(PeriodKind.ALL_TIME,), version=1)
    redis_client.hset(keys.meta("laps"), mapping={"active": 1, "writing": 1, "def": "1"})
    RedisSink(redis_client, keys, [v1]).apply(_records(0))
    before = _state(redis_client, keys)
    assert before[1], "the write under the live version landed"
    redis_client.hset(keys.meta("laps"), "def", meta_def)
    with pytest.raises(DefinitionStale) as stale:
        RedisSink(redis_client, keys, [v1], max_updates=1).apply(_records(100))
    assert stale.value.boards == {"laps": meta_def}
    assert _state(redis_client, keys) == before
    if meta_def == "2":
        RedisSink(redis_client, keys, [replace(v1, version=2)]).apply(_records(100))
        assert _state(redis_client, keys) != before


def test_a_file_board_writes_where_no_version_is_recorded_and_the_flip_records_one(
    config: Settings, redis_client: redis.Redis
) -> None:
    keys = Keys(config.redis_prefix)
    plain = Board(id="laps", periods=(PeriodKind.ALL_TIME,))
    redis_client.hset(keys.meta("laps"), mapping={"active": 1, "writing": 1})
    RedisSink(redis_client, keys, [plain]).apply(_records(0))  # no version either side: no fence
    gens = Generations(redis_client, keys, [plain])
    gen = gens.new_generation("laps")
    v3 = replace(plain, version=3)
    redis_client.hset(keys.position("laps", gen), "0", "5")
    assert gens.catch_up_and_flip(v3, gen, None, RedisSink(redis_client, keys, [v3])) == {"laps": 1}  # type: ignore[arg-type]
    assert redis_client.hget(keys.meta("laps"), "def") == b"3"
    with pytest.raises(DefinitionStale):
        RedisSink(redis_client, keys, [plain]).apply(_records(10))


def test_a_reader_that_has_not_seen_an_activation_is_told_so_not_served_the_wrong_rule(
    config: Settings, redis_client: redis.Redis
) -> None:
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("laps"), mapping={"active": 1, "writing": 1, "def": "4"})
    redis_client.zadd(keys.board("laps", 1, "all_time"), {"p1": 5.0})
    top = redis_client.register_script(script_text("top"))
    argv_keys = [keys.meta("laps"), keys.board("laps", 1, "all_time"), keys.stats("laps", 1, "all_time")]
    argv_keys += [keys.periods("laps", 1), keys.names()]

    def read(want: str) -> dict[str, object]:
        return dict(orjson.loads(top(keys=argv_keys, args=[want, 0, 10])))

    assert read("1:3") == {"s": "redefined", "def": "4"}  # built under version 4, the reader knows 3
    assert read("1:4")["s"] == "ok"
    assert read("1")["s"] == "ok"  # a board of the boards file: no version to check
    assert read("2:4")["s"] == "stale"  # the generation check comes first, as before
    redis_client.hset(keys.meta("laps"), "def", "retired")
    assert read("1:3")["s"] == "ok"  # a retired board stays readable


def test_a_flip_to_another_version_is_a_definition_stale_a_new_writing_generation_is_declared_again(
    config: Settings, redis_client: redis.Redis
) -> None:
    """Both answers of apply.lua to a sink with meta's ``writing`` cached: a flip that changed the version
    (and the generation) raises DefinitionStale and writes nothing; a flip under the same version (a
    rebuild) only changed the generation: the sink declares the new one's keys and resends by itself."""
    keys = Keys(config.redis_prefix)
    v1 = Board(id="laps", periods=(PeriodKind.ALL_TIME,), version=1)
    redis_client.hset(keys.meta("laps"), mapping={"active": 1, "writing": 1, "def": "1"})
    old = RedisSink(redis_client, keys, [v1])
    old.apply(_records(0))  # caches writing = "1"
    v2 = replace(v1, version=2)
    gens = Generations(redis_client, keys, [v2])

    def flip_to_new_generation() -> int:
        gen = gens.new_generation("laps")
        redis_client.hset(keys.position("laps", gen), "0", "1050")
        assert gens.catch_up_and_flip(v2, gen, None, RedisSink(redis_client, keys, [v2]))  # type: ignore[arg-type]
        return gen

    second = flip_to_new_generation()
    assert redis_client.hmget(keys.meta("laps"), ["active", "writing", "def"]) == [b"2", b"2", b"2"]
    with pytest.raises(DefinitionStale) as stale:
        old.apply(_records(100))
    assert stale.value.boards == {"laps": "2"}
    assert not redis_client.exists(keys.board("laps", second, "all_time"))

    new = RedisSink(redis_client, keys, [v2])
    assert new.apply(_records(1000)) > 0  # caches writing = "2"
    third = flip_to_new_generation()
    assert redis_client.hmget(keys.meta("laps"), ["writing", "def"]) == [str(third).encode(), b"2"]
    assert new.apply(_records(1100)) > 0
    assert redis_client.hget(keys.watermark("laps", third, "all_time"), "0") == b"1105"
    assert redis_client.zscore(keys.board("laps", third, "all_time"), "p0")
