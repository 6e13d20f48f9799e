"""Check that constraints/floors.txt pins each floor of pyproject.toml, and that it is installed.

Run with the Python of the floors environment (after `pip install -c constraints/floors.txt`):
every requirement of `[project] dependencies` and of the `trio` and `redis` extras has a
single `>=` floor, floors.txt pins exactly that version, and that version is the one
installed. So the two files cannot drift apart, and the suite that follows really runs at
the floors.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("trio", "redis")


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for extra in EXTRAS:
        declared += project["optional-dependencies"][extra]

    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            pin = Requirement(text)
            (spec,) = pin.specifier
            pins[canonicalize_name(pin.name)] = Version(spec.version)

    problems: list[str] = []
    found: list[str] = []
    for text in declared:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if len(floors) != 1:
            problems.append(f"pyproject.toml: {text!r} has no single >= floor")
            continue
        floor = floors[0]
        if pins.get(name) != floor:
            problems.append(f"floors.txt pins {name} {pins.get(name)}; pyproject.toml: {text!r}")
            continue
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        if installed != floor:
            problems.append(f"{name} {installed} is installed, not its floor {floor}")
            continue
        found.append(f"{name} {installed}")
    if problems:
        sys.stderr.write("".join(f"floors: {p}\n" for p in problems))
        return 1
    sys.stdout.write(f"floors installed: {', '.join(found)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
