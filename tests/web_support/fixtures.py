"""pytest fixtures for the web tests (import them into a test module to use them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web_support.server import WebServer, web_server


@pytest.fixture(scope="module", name="web")
def web_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server per test module, anonymous access from loopback (the default)."""
    with web_server(Path(tmp_path_factory.mktemp("web"))) as server:
        yield server
