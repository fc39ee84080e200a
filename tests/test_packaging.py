"""The explicit package list in pyproject.toml must name every package of the tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_package_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapped = setuptools["package-dir"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "pycluster").rglob("__init__.py")
    }
    strategies_root = ROOT / mapped["pycluster.strategies"]
    found |= {
        ".".join(["pycluster", "strategies", *init.parent.relative_to(strategies_root).parts])
        for init in strategies_root.rglob("__init__.py")
    }
    assert listed == found
    assert not (ROOT / "strategies" / "__init__.py").exists()
