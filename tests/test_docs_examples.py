"""The guides' own test files pass, as a reader would run them: pytest in a subprocess.

The testing guide (docs/how-to/testing.md) shows examples/testing/*.py; the security guide
and the other how-to pages show examples whose tests are in examples/ next to them. Each
folder is run as its own pytest session with its own conftest.py, so the fixtures a guide
tells readers to write are the ones used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
@pytest.mark.parametrize("folder", ["examples/testing"])
def test_a_guides_test_files_pass(folder: str) -> None:
    """Every test file a guide shows passes on asyncio and trio."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", folder],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert " passed" in run.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "example", sorted(p.stem for p in (REPO / "examples").glob("*.py") if p.stem != "__init__")
)
def test_every_example_says_how_to_run_it(example: str) -> None:
    """Each example's docstring gives the command that serves it."""
    source = (REPO / "examples" / f"{example}.py").read_text(encoding="utf-8")
    docstring = source.split('"""')[1]
    assert f"uvicorn examples.{example}:app" in docstring
