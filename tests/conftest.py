"""Shared test fixtures (the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from helpers import Collector
from tiny_bundle import make_tiny_bundle

# shared/ lies beside the checkout (CI clones the repo with shared/ next to it).
REAL_SEM_DIR = Path(
    os.environ.get("SSUM_REAL_SEM", Path(__file__).resolve().parents[2] / "shared/data/real-sem")
)


@pytest.fixture(scope="session")
def real_sem_dir() -> Path:
    if not REAL_SEM_DIR.is_dir():
        pytest.skip(f"real SEM test images not found at {REAL_SEM_DIR} (set SSUM_REAL_SEM)")
    return REAL_SEM_DIR


@pytest.fixture(scope="session")
def tiny_bundle_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle, built once per session; tests that write to a bundle use tiny_bundle."""
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture()
def tiny_bundle(tmp_path: Path, tiny_bundle_source: Path) -> Path:
    """A copy of the tiny bundle of this test's own."""
    return Path(shutil.copytree(tiny_bundle_source, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def trusted_bundle_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a reverse (SEM->OSR) generator and the trust statistics of
    simulated pairs (tiny_bundle.TRUST_*), built once per session."""
    return make_tiny_bundle(tmp_path_factory.mktemp("trusted") / "bundle", trusted=True)


@pytest.fixture()
def trusted_bundle(tmp_path: Path, trusted_bundle_source: Path) -> Path:
    """A copy of the trusted tiny bundle of this test's own."""
    return Path(shutil.copytree(trusted_bundle_source, tmp_path / "trusted"))


@pytest.fixture()
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture()
def collector(ctx: zmq.Context) -> Iterator[Callable[[str, int], Collector]]:
    """Start consumers of a daemon's output (SUB connects, PULL binds); closed at teardown."""
    started: list[Collector] = []

    def start(address: str, kind: int = zmq.SUB) -> Collector:
        started.append(Collector(ctx, address, kind))
        return started[-1]

    yield start
    for one in started:
        one.close()
