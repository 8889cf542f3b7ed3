"""Fixtures shared by the whole suite. Areas add their own in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import Broker, postgres_database, private_mosquitto, shared_mosquitto


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped after the test."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def mosquitto() -> Iterator[Broker]:
    """A private Mosquitto on a free port, with queue limits that never drop QoS 1."""
    with private_mosquitto() as broker:
        yield broker


@pytest.fixture
def shared_broker() -> Broker:
    """The machine's Mosquitto (127.0.0.1:1883) with a unique topic prefix."""
    return shared_mosquitto()
