"""The fast path for top / player / around answers exactly as the FastAPI routes do, errors included.

Boundary values of every bounded parameter are taken from the routes' OpenAPI document (min, max, max+1,
0, negative, non-integer ...), so a bound changed in routes.py is tested here without editing this file.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from starlette.types import Scope, Send

from leaderboard.settings import Settings
from query_api import fastpath
from query_api.app import create_app
from tests.api_world import BOARDS, World, ties

REQUESTS = [
    "/v1/leaderboards/global/entries?period=all_time",
    "/v1/leaderboards/global/entries?period=all_time&limit=2&offset=1",
    "/v1/leaderboards/global/entries",
    "/v1/leaderboards/chess_daily/entries?period=daily:2026-11-28",
    "/v1/leaderboards/global/entries?period=daily:2030-01-01",
    "/v1/leaderboards/global/players/p3?period=all_time",
    "/v1/leaderboards/global/players/p3/around?period=all_time&radius=1",
    "/v1/leaderboards/global/players/p1/around?period=weekly:2026-W48",
    # errors the fast path answers itself ...
    "/v1/leaderboards/nope/entries",
    "/v1/leaderboards/global/entries?period=yearly:2026",
    "/v1/leaderboards/global/entries?period=",
    "/v1/leaderboards/global/players/a%20b?period=all_time",
    "/v1/leaderboards/global/players/ghost?period=all_time",
    "/v1/leaderboards/chess_daily/players/p1?period=monthly:current",
    # ... and the ones it leaves to FastAPI's validation
    "/v1/leaderboards/global/entries?limit=5&limit=6",
]
EXAMPLE = {"board": "global", "player_id": "p3"}


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs the fast path answered itself (everything else went to FastAPI)."""
    answered: list[str] = []
    answer = fastpath.FastReads._answer

    async def recording(self: fastpath.FastReads, scope: Scope, send: Send, *args: Any) -> None:
        answered.append(scope["raw_path"].decode() + "?" + scope["query_string"].decode())
        await answer(self, scope, send, *args)

    monkeypatch.setattr(fastpath.FastReads, "_answer", recording)
    return answered


def boundary_cases(openapi: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """(url, must the fast path answer it?) for every bound the fast routes declare; None: either way."""
    cases: list[tuple[str, bool | None]] = []
    for template in fastpath.FAST_ROUTES:
        op = openapi["paths"][template]["get"]
        base = template.format(**EXAMPLE)
        for param in op["parameters"]:
            schema, name = param["schema"], param["name"]
            if param["in"] == "path":
                longest = schema["maxLength"]
                for length, fast in ((longest, True), (longest + 1, False)):
                    value = (EXAMPLE[name] * length)[:length]
                    cases.append((template.format(**{**EXAMPLE, name: value}) + "?period=all_time", fast))
            elif schema.get("type") == "integer":
                low, high = schema["minimum"], schema["maximum"]
                values: list[tuple[str, bool | None]] = [
                    (str(low), True),
                    (str(high), True),
                    (str(high + 1), False),
                    (str(low - 1), False),
                    ("0", low <= 0 <= high),
                    ("-1", False),
                    ("abc", False),
                    ("1.5", False),
                    ("1e3", False),
                    ("", False),
                    ("9" * 30, False),
                    ("\N{SUPERSCRIPT TWO}", False),
                    ("\N{ARABIC-INDIC DIGIT ONE}", False),
                    ("+1", None),
                    (" 1", None),
                    ("0" + str(high), None),
                ]
                cases += [(f"{base}?period=all_time&{name}={quote(v)}", fast) for v, fast in values]
            else:  # the period text: its length bound
                longest = schema["anyOf"][0]["maxLength"]
                cases.append((f"{base}?period={'x' * longest}", True))
                cases.append((f"{base}?period={'x' * (longest + 1)}", False))
    return cases


def test_fast_path_and_fastapi_routes_agree(world: World, taken: list[str]) -> None:
    ties(world)
    with (
        TestClient(create_app(world.config, BOARDS)) as fast,
        TestClient(create_app(world.config, BOARDS, fast_path=False)) as slow,
    ):
        cases = [(url, None) for url in REQUESTS] + boundary_cases(slow.get("/openapi.json").json())
        assert len(cases) > 60, "every fast route's bounded parameters produced cases"
        for url, must_be_fast in cases:
            before = len(taken)
            a, b = fast.get(url), slow.get(url)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), url
            for header in ("content-type", "cache-control", "etag", "retry-after"):
                assert a.headers.get(header) == b.headers.get(header), (url, header)
            if must_be_fast is not None:
                assert (len(taken) > before) == must_be_fast, (url, "fast path taken?", must_be_fast)
        assert len(taken) > 20
        etag = fast.get(REQUESTS[0]).headers["etag"]
        assert fast.get(REQUESTS[0], headers={"If-None-Match": etag}).status_code == 304
        assert fast.get(REQUESTS[0], headers={"If-None-Match": 'W/"other", ' + etag}).status_code == 304


def test_bounds_come_from_the_route_declarations() -> None:
    """Each integer parameter's default and range, as the fast path read them, equal the OpenAPI ones."""
    with TestClient(create_app(Settings(), BOARDS)) as client:
        openapi = client.get("/openapi.json").json()
    specs = {spec.template: spec for spec in fastpath._SPECS}
    assert specs.keys() == set(fastpath.FAST_ROUTES)
    for template, spec in specs.items():
        declared = {
            p["name"]: (p["schema"].get("default"), p["schema"]["minimum"], p["schema"]["maximum"])
            for p in openapi["paths"][template]["get"]["parameters"]
            if p["schema"].get("type") == "integer"
        }
        assert {n: (i.default, i.low, i.high) for n, i in spec.ints.items()} == declared
