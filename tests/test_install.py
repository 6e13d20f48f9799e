"""What `pip install` puts on disk: the wheel that `scripts/test` builds and installs.

`scripts/test` (the README's test command, run by CI) installs the built wheel in a fresh
virtual environment and runs this suite from the repository root with `src/` off
`sys.path`, so every test exercises the installed package, not the source tree.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

import wsrooms

REPO = Path(__file__).resolve().parent.parent
installed_wheel = pytest.mark.skipif(
    os.environ.get("WSROOMS_TEST_INSTALLED") != "1",
    reason="checks the wheel that scripts/test installs (WSROOMS_TEST_INSTALLED=1)",
)


@installed_wheel
def test_wsrooms_is_imported_from_the_installed_wheel() -> None:
    """The suite imports wsrooms from site-packages, not from the checkout's src/."""
    location = Path(wsrooms.__file__).resolve()
    assert "site-packages" in location.parts
    assert not location.is_relative_to(REPO / "src")
    files = metadata.files("wsrooms") or []
    assert not any(str(f).endswith(".pth") for f in files), "an editable install"


def test_the_distribution_ships_its_types_backends_and_testing() -> None:
    """The installed distribution has py.typed, the backends package and wsrooms.testing."""
    import wsrooms.backends.memory
    import wsrooms.testing

    root = Path(wsrooms.__file__).parent
    assert (root / "py.typed").is_file()
    for module in (wsrooms.backends.memory, wsrooms.testing):
        assert module.__file__ is not None
        assert Path(module.__file__).is_relative_to(root)


def test_the_extras_are_declared() -> None:
    """`wsrooms[trio]`, `wsrooms[redis]` and `wsrooms[testing]` exist, as the docs say."""
    extras = set(metadata.metadata("wsrooms").get_all("Provides-Extra") or [])
    assert {"trio", "redis", "testing"} <= extras
    assert metadata.version("wsrooms") == wsrooms.__version__
