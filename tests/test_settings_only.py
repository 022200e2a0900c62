"""Configuration comes from leaderboard/settings.py only: no LEADERBOARD_* environment reads elsewhere, and
the benchmarks and the demo name no service address of their own (they would bypass the settings)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("leaderboard", "consumers", "producers", "query_api", "schemas", "tests", "bench")
SETTINGS = ROOT / "leaderboard" / "settings.py"
SERVICE_ADDRESS = re.compile(r"(redis|rediss|postgres|postgresql)://|:(9092|6379|5432)\b")


def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` or a bare ``environ``."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _leaderboard_var(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("LEADERBOARD_")
    )


def environment_reads(source: str) -> list[int]:
    """Line numbers where ``source`` reads a LEADERBOARD_* variable from the process environment."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and _leaderboard_var(node.args[0]):
            f = node.func
            getenv = (isinstance(f, ast.Attribute) and f.attr == "getenv") or (
                isinstance(f, ast.Name) and f.id == "getenv"
            )
            environ_get = isinstance(f, ast.Attribute) and f.attr in ("get", "pop") and _is_environ(f.value)
            if getenv or environ_get:
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if _is_environ(node.value) and _leaderboard_var(node.slice):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Compare)
            and _leaderboard_var(node.left)
            and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            and any(map(_is_environ, node.comparators))
        ):
            lines.append(node.lineno)
    return sorted(lines)


def _python_files() -> list[Path]:
    return [p for d in SOURCES for p in sorted((ROOT / d).rglob("*.py")) if p != SETTINGS]


def test_the_checker_sees_every_way_of_reading_the_environment() -> None:
    source = "\n".join(
        [
            "import os",
            "from os import environ, getenv",
            'a = os.environ.get("LEADERBOARD_TOPIC")',
            'b = os.environ["LEADERBOARD_TOPIC"]',
            'c = os.getenv("LEADERBOARD_TOPIC", "x")',
            'd = "LEADERBOARD_TOPIC" in os.environ',
            'e = environ.get("LEADERBOARD_TOPIC")',
            'f = getenv("LEADERBOARD_TOPIC")',
            'env = {}; env["LEADERBOARD_TOPIC"] = "t"',  # building a child's environment is no read
            'g = os.environ.get("PATH")',
        ]
    )
    assert environment_reads(source) == [3, 4, 5, 6, 7, 8]


def test_no_leaderboard_variable_is_read_outside_settings() -> None:
    files = _python_files()
    assert len(files) > 50, "the walk found the sources"
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files for n in environment_reads(p.read_text())]
    assert not found, f"read LEADERBOARD_* through leaderboard.settings instead: {found}"


def test_benchmarks_and_demo_name_no_service_address() -> None:
    files = [*sorted((ROOT / "bench").glob("*.py")), ROOT / "leaderboard" / "demo.py"]
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if SERVICE_ADDRESS.search(line)
    ]
    assert not found, f"service addresses come from leaderboard.settings: {found}"
