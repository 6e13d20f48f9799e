"""Every test runs on asyncio (in debug mode) and on trio."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import pytest
from starlette.testclient import TestClient

BACKENDS = [
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def test_client_factory(
    anyio_backend_name: str, anyio_backend_options: dict[str, Any]
) -> Callable[..., TestClient]:
    """Starlette's TestClient on the backend under test (as Starlette's own suite does)."""
    backend: Literal["asyncio", "trio"] = "trio" if anyio_backend_name == "trio" else "asyncio"
    return functools.partial(TestClient, backend=backend, backend_options=anyio_backend_options)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the combinations that cannot exist (uvicorn has no trio worker) instead of
    reporting them as skipped."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        backend = params.get("anyio_backend", ("asyncio",))[0]
        if params.get("server_name") == "uvicorn" and backend == "trio":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
