"""Every package's docstring names each of its parts (modules and subpackages), so a newcomer
finds a concept by reading the package's first page; a module added without a line there
fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "src" / "ringkv"
PACKAGES = sorted(p.parent for p in PACKAGE_ROOT.rglob("__init__.py"))


def parts_of(package: Path) -> list[str]:
    names = [p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")]
    names += [p.name for p in package.iterdir() if (p / "__init__.py").exists()]
    return sorted(names)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_docstring_names_every_part(package: Path) -> None:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    top = package == PACKAGE_ROOT
    missing = [
        name
        for name in parts_of(package)
        if f"``{name}``" not in doc and f"``ringkv.{name}``" not in doc
    ]
    assert not missing, f"{package.name}/__init__.py does not name {missing}" + (
        " (as ``ringkv.name``)" if top else " (as ``name``)"
    )


def test_the_check_sees_every_package() -> None:
    assert {p.name for p in PACKAGES} == {"ringkv", "core", "node", "operator"}
