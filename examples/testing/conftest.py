"""The testing guide's conftest.py: every test marked `anyio` runs on asyncio and trio."""

import functools
from collections.abc import Callable
from typing import Any, Literal

import pytest
from starlette.testclient import TestClient


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def test_client_factory(
    anyio_backend_name: Literal["asyncio", "trio"], anyio_backend_options: dict[str, Any]
) -> Callable[..., TestClient]:
    return functools.partial(
        TestClient, backend=anyio_backend_name, backend_options=anyio_backend_options
    )
