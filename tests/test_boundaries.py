"""Import rules that show the architecture, read from the source with ``ast`` (no module is imported).

- The read API (query_api), the write path's producers and its consumers import none of each other; the
  one place that puts the read API and HTTP ingest together is ``leaderboard.service`` (``leaderboard api``).
- The shared package (leaderboard) imports none of them, but for that composition root.
- Nothing imports the command line (``leaderboard.cli``, ``leaderboard.service``, ``*_tool`` modules), and a
  module that is not itself a command (does not import argparse) imports no command module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("leaderboard", "query_api", "producers", "consumers", "schemas")
APP_PACKAGES = {"query_api", "producers", "consumers"}
COMPOSITION_ROOT = "leaderboard.service"

KNOWN_COMMAND_IMPORTS = {
    # The consumer calls the period-close and migration code that lives in their command modules; issue 14
    # leaves splitting them to the growth work. Remove each line when it is gone (the test says so).
    ("consumers.processor", "consumers.migrate"),
}


@dataclass(frozen=True)
class Module:
    name: str
    imports: frozenset[str]
    """Every module named by an import statement anywhere in the file (functions included)."""

    @property
    def package(self) -> str:
        return self.name.split(".")[0]

    @property
    def is_command(self) -> bool:
        return "argparse" in self.imports


def _imports(tree: ast.AST, name: str, is_package: bool) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import mod`` imports pkg.mod when that is a module
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(found)


def modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            is_package = rel.name == "__init__"
            name = ".".join(rel.parts[:-1] if is_package else rel.parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            out[name] = Module(name, _imports(tree, name, is_package))
    return out


def own(imports: frozenset[str], known: dict[str, Module]) -> set[str]:
    """The project's modules among ``imports`` (names of functions or classes dropped)."""
    return {i for i in imports if i in known}


MODULES = modules()


def test_the_walker_sees_imports() -> None:
    """Without this, every rule below would pass on a walker that finds nothing."""
    assert {"query_api.app", "producers.ingest", "consumers.processor", COMPOSITION_ROOT} <= MODULES.keys()
    service = own(MODULES[COMPOSITION_ROOT].imports, MODULES)
    assert {"producers.ingest", "query_api.app"} <= service
    assert "query_api.problems" in own(MODULES["query_api.fastpath"].imports, MODULES)  # from pkg import mod
    assert MODULES["consumers.runner"].is_command


def test_read_api_producers_and_consumers_import_none_of_each_other() -> None:
    crossings = sorted(
        (m.name, target)
        for m in MODULES.values()
        if m.package in APP_PACKAGES
        for target in own(m.imports, MODULES)
        if target.split(".")[0] in APP_PACKAGES - {m.package}
    )
    assert crossings == []


def test_the_shared_package_imports_no_application_package_but_the_composition_root() -> None:
    crossings = sorted(
        (m.name, target)
        for m in MODULES.values()
        if m.package in {"leaderboard", "schemas"} and m.name != COMPOSITION_ROOT
        for target in own(m.imports, MODULES)
        if target.split(".")[0] in APP_PACKAGES
    )
    assert crossings == []


def test_nothing_imports_the_command_line() -> None:
    entry_points = {"leaderboard.cli", COMPOSITION_ROOT}
    offenders = sorted(
        (m.name, target)
        for m in MODULES.values()
        for target in own(m.imports, MODULES)
        if target in entry_points or (target.endswith("_tool") and m.name != "leaderboard.cli")
    )
    assert offenders == []


def test_modules_that_are_not_commands_import_no_command_module() -> None:
    edges = {
        (m.name, target)
        for m in MODULES.values()
        if not m.is_command
        for target in own(m.imports, MODULES)
        if MODULES[target].is_command
    }
    assert edges - KNOWN_COMMAND_IMPORTS == set(), "a library module imports a command module"
    assert KNOWN_COMMAND_IMPORTS - edges == set(), "fixed: remove these from KNOWN_COMMAND_IMPORTS"
