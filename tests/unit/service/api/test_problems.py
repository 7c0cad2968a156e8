"""The one mapping from the service's errors to HTTP answers."""

from __future__ import annotations

import inspect

import pytest

from service import errors
from service.api.problems import PROBLEMS, problem_for, retry_after
from service.errors import (
    BackendUnavailable,
    DatabaseUnavailable,
    ExportsError,
    IdentityProviderUnavailable,
    NotFound,
    RequestRefused,
    TooManyActiveExports,
)


def answered_kinds() -> list[type[ExportsError]]:
    """Every error class a request can end with: refusals and unavailable backends."""
    return [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, RequestRefused | BackendUnavailable) and kind not in (RequestRefused,)
    ]


@pytest.mark.parametrize("kind", answered_kinds(), ids=lambda kind: kind.__name__)
def test_every_error_a_request_can_end_with_has_an_answer(kind: type[ExportsError]) -> None:
    assert problem_for(kind.__new__(kind)) is not None


def test_the_errors_know_nothing_of_http() -> None:
    for _, kind in inspect.getmembers(errors, inspect.isclass):
        assert not {"status", "slug", "title"} & set(vars(kind)), kind.__name__


def test_statuses_and_slugs_are_unique_per_row() -> None:
    slugs = [problem.slug for problem in PROBLEMS.values()]
    assert len(slugs) == len(set(slugs))


def test_subclasses_are_answered_as_their_base() -> None:
    assert problem_for(DatabaseUnavailable("down")) == problem_for(IdentityProviderUnavailable("down"))
    assert problem_for(DatabaseUnavailable("down")).status == 503  # type: ignore[union-attr]
    assert problem_for(NotFound("x")).status == 404  # type: ignore[union-attr]
    assert problem_for(ExportsError("not for clients")) is None


def test_retry_after_is_said_for_outages_and_the_per_org_limit_only() -> None:
    assert retry_after(DatabaseUnavailable("down")) == 5
    assert retry_after(TooManyActiveExports("busy", retry_after=30)) == 30
    assert retry_after(NotFound("x")) is None
