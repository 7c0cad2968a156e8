"""Shared fixtures: fresh fakes of the ports for every test."""

from __future__ import annotations

import pytest

from tests.support.fakes import FakeQueue, FakeRepository, FakeS3


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()
