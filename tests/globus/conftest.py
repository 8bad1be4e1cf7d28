"""The project's Globus code against Globus's own recorded answers (``globus_sdk.testing``).

Everything goes through the real globus-sdk and ``requests``; only the network is
replaced, by ``responses``, which ``globus_sdk.testing.load_response`` registers on. An
answer the recordings lack is built from a recorded one (same status, code and shape,
served on the route under test) and says so where it is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from globus_tmp.config import Config
from globus_tmp.globusapi import GlobusSession

from globus.globus_recorded import CLIENT_ID, seed_tokens


@pytest.fixture(autouse=True)
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """globus_sdk.testing registers on ``responses``' default mock: the one started here."""
    for name in list(os.environ):
        if name == "GLOBUS_SDK_ENVIRONMENT" or name.startswith("GLOBUS_SDK_SERVICE_URL_"):
            monkeypatch.delenv(name)
    responses.start()
    try:
        yield
    finally:
        responses.stop()
        responses.reset()


@pytest.fixture
def cfg() -> Config:
    return Config(globus_client_id=CLIENT_ID)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    path = tmp_path / "user"
    seed_tokens(path)
    return path


@pytest.fixture
def session(cfg: Config, user_dir: Path) -> GlobusSession:
    return GlobusSession(cfg, user_dir, interactive=False)
