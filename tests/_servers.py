"""Fixtures for end-to-end tests that run on the three server/loop pairs.

uvicorn (asyncio) writes only to a writable socket; hypercorn (asyncio, and trio) writes,
then waits for the drain. Import the three fixtures into a test module to use them.
"""

from __future__ import annotations

from typing import Any

import pytest

from wsrooms.testing import ServerName


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}, "uvicorn"), id="asyncio-uvicorn"),
        pytest.param(("asyncio", {}, "hypercorn"), id="asyncio-hypercorn"),
        pytest.param(("trio", {}, "hypercorn"), id="trio-hypercorn"),
    ]
)
def backend_and_server(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], str]:
    """(anyio backend, its options, server); asyncio runs without debug mode here, since
    these tests push tens of thousands of frames (debug mode slows that about sevenfold)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(
    backend_and_server: tuple[str, dict[str, Any], str],
) -> tuple[str, dict[str, Any]]:
    return backend_and_server[0], backend_and_server[1]


@pytest.fixture
def server_name(backend_and_server: tuple[str, dict[str, Any], str]) -> ServerName:
    return "uvicorn" if backend_and_server[2] == "uvicorn" else "hypercorn"
