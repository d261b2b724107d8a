"""The layout shows the architecture: imports point down the data path, and no module grows past ~300 lines.

The data path is data -> features -> models -> training -> serving. A package may import its own
modules and those before it on the path, plus the shared base (errors, _io, config, faults);
cluster, reporting, tuning and cli sit beside the path and may import from it, never the other way round
(training names the cluster's Runtime for type hints only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rstack"
PATH = ("data", "features", "models", "training", "serving")
BASE = ("errors", "_io", "config", "faults")
BESIDE = ("cluster", "reporting", "tuning", "cli")
MAX_LINES = 320  # "~300": a little slack so that one more docstring does not force a split


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(module: str) -> str:
    """rstack.models.meta -> models; rstack.config -> config; rstack -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _name(path: Path) -> str:
    return ".".join(("rstack", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every rstack module ``path`` imports (module level or inside functions), with whether only for typing."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rstack"):
            found.append((node.module, id(node) in typing_only))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in typing_only) for a in node.names if a.name.startswith("rstack")]
    return found


def _allowed(me: str, other: str, typing_only: bool) -> bool:
    if other in ("", me, *BASE):
        return True  # the package root (its __version__), itself, the shared base
    if me in BASE:
        return False
    if me in PATH:
        if other in PATH:
            return PATH.index(other) < PATH.index(me)
        return other == "cluster" and typing_only
    if me in ("cluster", "reporting", "tuning"):
        return other != "cli"
    return True  # the CLI, and the Python API in rstack/__init__.py


def test_imports_point_down_the_data_path() -> None:
    wrong = [
        f"{_name(path)} imports {target}"
        for path in _modules()
        for target, typing_only in _imports(path)
        if not _allowed(_package_of(_name(path)), _package_of(target), typing_only)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_longer_than_about_300_lines() -> None:
    long = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize(
    ("me", "other", "typing_only", "ok"),
    [
        ("serving", "models", False, True),
        ("models", "serving", False, False),
        ("data", "features", False, False),
        ("training", "cluster", True, True),
        ("training", "cluster", False, False),
        ("training", "reporting", False, False),
        ("config", "features", False, False),
        ("reporting", "training", False, True),
        ("cluster", "cli", False, False),
        ("tuning", "training", False, True),
        ("tuning", "cli", False, False),
    ],
)
def test_the_rule_itself(me: str, other: str, typing_only: bool, ok: bool) -> None:
    assert _allowed(me, other, typing_only) is ok
