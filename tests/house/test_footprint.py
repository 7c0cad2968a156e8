"""Each process loads only what it runs: the API and the scheduler never load pyarrow (about 45 MiB
resident), and a worker never loads the API. Checked on the module graph, in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cli.main


def command_imports(command: str) -> list[str]:
    """The modules ``cmd_<command>`` in cli/main.py imports when it runs."""
    tree = ast.parse(Path(cli.main.__file__).read_text("utf-8"))
    [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"cmd_{command}"]
    found: list[str] = []
    for node in ast.walk(function):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


#: Top-level packages each process must not load.
FORBIDDEN = {
    "api": ["pyarrow"],
    "scheduler": ["pyarrow", "aiohttp", "service.api"],
    "worker": ["service.api", "jsonschema", "apispec", "jwt"],
}


def loaded(modules: list[str]) -> set[str]:
    code = "import sys, importlib\n"
    code += "".join(f"importlib.import_module({name!r})\n" for name in ["cli.main", *modules])
    code += "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("process", sorted(FORBIDDEN))
def test_a_process_loads_only_what_it_runs(process: str) -> None:
    modules = loaded(command_imports(process))
    found = sorted(
        name for name in modules for forbidden in FORBIDDEN[process] if f"{name}.".startswith(f"{forbidden}.")
    )
    assert not found, f"the {process} process loads {found[:10]}"


def test_each_process_loads_what_it_runs() -> None:
    # The checks above would pass vacuously if the commands no longer imported their code.
    assert {"service.exporter", "pyarrow"} <= loaded(command_imports("worker"))
    assert {"service.api.app", "aiohttp.web"} <= loaded(command_imports("api"))
    assert "actors.scheduler" in loaded(command_imports("scheduler"))
