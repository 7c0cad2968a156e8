"""The README's settings table is the one VARIABLES declares, and each default it states is the
code's default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from service.settings import VARIABLES, Settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_the_declared_table() -> None:
    text = README.read_text("utf-8")
    match = re.search(r"<!-- settings:start[^>]*-->\n(.*?)<!-- settings:end -->", text, re.DOTALL)
    assert match is not None, "README.md has no settings block"
    assert match.group(1) == settings_table(), "paste service.settings.settings_table() into README.md"


def test_every_field_is_set_by_exactly_one_variable() -> None:
    fields = [variable.field for variable in VARIABLES]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len({variable.name for variable in VARIABLES}) == len(VARIABLES)


@pytest.mark.parametrize("variable", VARIABLES, ids=lambda v: v.name)
def test_the_documented_default_is_the_codes(variable: object) -> None:
    assert isinstance(variable, type(VARIABLES[0]))
    default = getattr(Settings(), variable.field)
    shown = re.fullmatch(r"`([^`]*)`", variable.default)
    if shown is None:  # "unset...", "empty", "none...": nothing is set
        assert not default, f"{variable.name}: documented as {variable.default!r}, default is {default!r}"
    else:
        assert variable.parse(variable.name, shown.group(1)) == default
