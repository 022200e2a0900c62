"""The live page in headless Chromium against a real consumer and API (events from the simulator).

Debian's chromium (``deploy/stack.sh tools``), never a downloaded browser.
Takes a screenshot of the page; with UPDATE_SCREENSHOT=1 it replaces
docs/screenshot-live-page.png, otherwise it goes to the test's temporary folder (tests leave the tree clean).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest
import redis
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard.boards import load as load_boards
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from producers.publisher import Publisher
from tests.factories import win
from tests.procs import ApiProcess, consumer_and_api, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOC_SCREENSHOT = ROOT / "docs" / "screenshot-live-page.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium missing: run `deploy/stack.sh tools` (make test does)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def api(config: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    """Consumer + API with ~400 simulated events applied (with display names, duplicates, bad records)."""
    with consumer_and_api(
        config,
        tmp_path,
        *("--count", "400", "--rate", "0", "--players", "60", "--display-names"),
        *("--duplicate-ratio", "0.03", "--invalid-ratio", "0.03", "--seed", "11"),
    ) as (_, server):
        yield server


def top_ids(api: ApiProcess, limit: int) -> list[str]:
    status, body = api.get(f"/v1/leaderboards/global/entries?limit={limit}")
    assert status == 200, body
    return [e["player_id"] for e in json.loads(body)["entries"]]


def rows(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#rows tr[data-player]", "rs => rs.map(r => r.dataset.player)")
    return ids


def test_live_page(api: ApiProcess, browser: Browser, config: Settings, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(api.url + "/", wait_until="domcontentloaded")

    # Renders the top 10 of the default board and period, in the API's order.
    expect(page.locator("#rows tr[data-player]")).to_have_count(10, timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
    assert rows(page) == top_ids(api, 10)
    assert page.locator("#board").input_value() == "global"

    # Top 25 on request.
    page.select_option("#limit", "25")
    expect(page.locator("#rows tr[data-player]")).to_have_count(25, timeout=WAIT_MS)
    wait_until(lambda: rows(page) == top_ids(api, 25), 15, "page shows the API's top 25")

    # Updates live: a new player with a huge score appears at #1 without a reload.
    with Publisher(config) as pub:
        pub.publish(win("champion-x", datetime.now(UTC), 100_000, display_name="Champion X")).result(30)
    first = page.locator('#rows tr[data-rank="1"]')
    expect(first).to_have_attribute("data-player", "champion-x", timeout=WAIT_MS)
    expect(first).to_contain_text("Champion X")
    expect(first).to_have_class("new flash", timeout=WAIT_MS)

    # Player search: rank, score, percentile and neighbours on both sides.
    target = top_ids(api, 10)[5]
    status, body = api.get(f"/v1/leaderboards/global/players/{target}")
    assert status == 200
    me = json.loads(body)
    page.fill("#player-id", target)
    page.click("#search button")
    expect(page.locator("#player-card")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#player-rank")).to_contain_text(f"#{me['rank']} of")
    expect(page.locator("#player-score")).to_have_text(f"{me['score']:,}")
    expect(page.locator("#player-pct")).to_contain_text("top ")
    around = page.locator("#around tr[data-player]")
    expect(around).to_have_count(7, timeout=WAIT_MS)  # radius 3 on both sides
    expect(page.locator("#around tr.me")).to_have_attribute("data-player", target)
    status, body = api.get(f"/v1/leaderboards/global/players/{target}/around?radius=3")
    shown = page.eval_on_selector_all("#around tr", "rs => rs.map(r => r.dataset.player)")
    assert shown == [e["player_id"] for e in json.loads(body)["entries"]]
    expect(page.locator(f'#rows tr.me[data-player="{target}"]')).to_have_count(1)
    assert "player=" in page.url  # shareable link

    # Unknown player: a clear message, not an error.
    page.fill("#player-id", "nobody-here")
    page.click("#search button")
    expect(page.locator("#search-msg")).to_contain_text("has no score", timeout=WAIT_MS)
    page.fill("#player-id", target)
    page.click("#search button")
    expect(page.locator("#player-card")).to_be_visible(timeout=WAIT_MS)
    page.wait_for_timeout(1700)  # let the rank-change flash fade before the screenshot
    shot = DOC_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not errors, errors


def test_rebuilding_banner_on_503(api: ApiProcess, browser: Browser) -> None:
    """While boards are rebuilt the API answers 503; the page says so and keeps retrying."""
    page = browser.new_page()

    def unavailable(route: Route) -> None:
        route.fulfill(
            status=503,
            content_type="application/problem+json",
            body=json.dumps(
                {"type": "/problems/not-ready", "title": "Not ready", "status": 503, "detail": "x"}
            ),
            headers={"Retry-After": "5"},
        )

    page.route("**/v1/leaderboards/*/entries**", unavailable)
    page.goto(api.url + "/", wait_until="domcontentloaded")
    banner = page.locator("#rebuilding")
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text("rebuilding — data will be back shortly", ignore_case=True)

    # Back to normal: the page reconnects by itself and the banner goes.
    page.unroute("**/v1/leaderboards/*/entries**")
    expect(page.locator("#rows tr[data-player]")).to_have_count(10, timeout=WAIT_MS)
    expect(banner).to_be_hidden()


@pytest.mark.slow  # a browser and an API process: about a minute on a loaded 2-core machine
def test_an_ascending_time_trial_shows_times_and_the_countdown(
    config: Settings, browser: Browser, tmp_path: Path
) -> None:
    """A time-trial board (best, asc, by score in ms): lap times formatted as times, the best first, and the
    countdown to the shown period's end."""
    boards = tmp_path / "boards.toml"
    boards.write_text(
        '[[board]]\nid = "laps"\naggregation = "best"\norder = "asc"\nvalue = "score"\n'
        'periods = ["daily", "all_time"]\n'
    )
    cfg = replace(config, boards_file=boards)
    board = load_boards(boards)[0]
    keys = Keys(cfg.redis_prefix)
    with redis.Redis.from_url(cfg.redis_url) as r, psycopg.connect(cfg.database_url, autocommit=True) as conn:
        migrate(conn)
        r.hset(keys.meta("laps"), mapping={"active": 1, "writing": 1})
        now = datetime.now(UTC)
        laps = [("ann", 61_250), ("bob", 59_004), ("ann", 58_999), ("cy", 3_725_000)]
        records = [
            Canonical(0, i, msgspec.structs.replace(win(p, now - timedelta(seconds=60 - i)), score=s))
            for i, (p, s) in enumerate(laps)
        ]
        RedisSink(r, keys, (board,)).apply(records)
    api = ApiProcess(cfg, tmp_path)
    try:
        api.wait_ready()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(api.url + "/?board=laps&period=daily:current", wait_until="domcontentloaded")
        expect(page.locator("#rows tr[data-player]")).to_have_count(3, timeout=WAIT_MS)
        assert rows(page) == ["ann", "bob", "cy"]  # lower is better
        scores = page.eval_on_selector_all(
            "#rows tr[data-player] td.score", "cs => cs.map(c => c.textContent)"
        )
        assert scores == ["0:58.999", "0:59.004", "1:02:05.000"]
        expect(page.locator("#countdown")).to_contain_text("ends in ", timeout=WAIT_MS)
        end = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        text = page.locator("#countdown").text_content() or ""
        h, m, s = (int(x) for x in text.removeprefix("ends in ").split(":"))
        assert abs((end - datetime.now(UTC)).total_seconds() - (h * 3600 + m * 60 + s)) < 5
        assert errors == []
    finally:
        api.stop()
