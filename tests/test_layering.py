"""Architecture checks: ``ringkv.core`` is pure (no I/O, no clocks, no randomness, no upward
imports), importing it pulls in no server/operator libraries, and it passes ``mypy --strict``."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CORE = SRC / "ringkv" / "core"

# The server, operator and event-loop libraries: not imported by the core, and not even loaded
# after importing it.
SERVER_LIBRARIES = frozenset(
    {"aiohttp", "httptools", "rocksdict", "prometheus_client", "kopf", "kubernetes", "uvloop"}
)
FORBIDDEN_TOP_LEVEL = SERVER_LIBRARIES | {
    "socket",
    "asyncio",
    "os",
    "time",
    "datetime",
    "random",
    "pathlib",
    "subprocess",
    "threading",
    # Beyond the required list: more I/O, processes, randomness and dynamic imports.
    "importlib",
    "multiprocessing",
    "selectors",
    "signal",
    "shutil",
    "tempfile",
    "secrets",
}
FORBIDDEN_RINGKV = ("ringkv.node", "ringkv.operator", "ringkv.client", "ringkv.cli")
# What must not even be loaded after importing the core (the interpreter itself loads os, time
# and friends, so the stdlib part of the list above is checked statically only).
FORBIDDEN_AT_RUNTIME = SERVER_LIBRARIES | {"asyncio"}
FORBIDDEN_CALLS = frozenset({"__import__", "open", "exec", "eval"})


def core_modules() -> list[Path]:
    modules = sorted(CORE.rglob("*.py"))
    assert modules, f"no modules found under {CORE}"
    return modules


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, anywhere in the file (also in
    functions and ``TYPE_CHECKING`` blocks), with relative imports resolved. For ``from X
    import y`` both ``X`` and ``X.y`` are listed (``y`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def is_forbidden(module: str) -> bool:
    top = module.split(".")[0]
    if top in FORBIDDEN_TOP_LEVEL:
        return True
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_RINGKV)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    bad = [
        f"{path.name}:{line}: {module}"
        for line, module in imported_modules(path)
        if is_forbidden(module)
    ]
    assert not bad, "ringkv.core must stay pure; forbidden imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_calls_no_io_builtins(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{path.name}:{node.lineno}: {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    ]
    assert not bad, "ringkv.core must stay pure; forbidden calls:\n" + "\n".join(bad)


def test_import_scanner_sees_every_form(tmp_path: Path) -> None:
    """The scanner itself: plain, dotted, aliased, from-, relative and nested imports."""
    package = tmp_path / "src" / "ringkv" / "core"
    package.mkdir(parents=True)
    sample = package / "sample.py"
    sample.write_text(
        "import os.path as p\n"
        "import json, asyncio.events\n"
        "from time import monotonic\n"
        "from .. import node\n"
        "from ..cli import main\n"
        "from . import ring\n"
        "from ringkv import client\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ringkv.operator.crd import X\n"
        "def f():\n"
        "    import random\n",
        encoding="utf-8",
    )
    modules = {module for _, module in imported_modules(sample, tmp_path / "src")}
    flagged = {module for module in modules if is_forbidden(module)}
    assert flagged >= {
        "os.path",
        "asyncio.events",
        "time",
        "ringkv.node",
        "ringkv.cli",
        "ringkv.client",
        "ringkv.operator.crd",
        "random",
    }
    assert "ringkv.core.ring" in modules
    assert "ringkv.core.ring" not in flagged
    assert "json" not in flagged
    assert not is_forbidden("ringkv.core.versions")
    assert not is_forbidden("ringkv.nodes_are_not_node")
    assert not is_forbidden("osmosis")
    assert not is_forbidden("timeit_like")


def test_importing_core_loads_no_server_libraries() -> None:
    code = (
        "import ringkv.core.ring, ringkv.core.placement, ringkv.core.versions, "
        "ringkv.core.quorum, ringkv.core.gossip, ringkv.core.failure_detector; import sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'aiohttp','rocksdict','prometheus_client','kopf','asyncio'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_every_core_module_loads_no_server_libraries() -> None:
    """The same for every module under ringkv/core, including ones added later."""
    modules = sorted({module_name(path) for path in core_modules()})
    code = (
        f"import {', '.join(modules)}; import sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FORBIDDEN_AT_RUNTIME)!r} or m.startswith({FORBIDDEN_RINGKV!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_is_strict_in_the_mypy_config() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    overrides = config["tool"]["mypy"].get("overrides", [])
    strict_modules = {
        module
        for override in overrides
        if override.get("strict") is True
        for module in (
            override["module"] if isinstance(override["module"], list) else [override["module"]]
        )
    }
    assert "ringkv.core.*" in strict_modules


def mypy_command() -> list[str]:
    venv_mypy = Path(sys.executable).parent / "mypy"
    if venv_mypy.exists():
        return [str(venv_mypy)]
    on_path = shutil.which("mypy")
    if on_path:
        return [on_path]
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed")
    return [sys.executable, "-m", "mypy"]


def test_core_passes_mypy_strict() -> None:
    result = subprocess.run(
        [*mypy_command(), "src/ringkv/core"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
