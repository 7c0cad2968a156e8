"""The house rules docs/architecture.md states, checked on the source: who may import what, no
two modules or classes with one name."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("service", "actors", "cli")
PACKAGES = (*PRODUCTION, "devtools")

#: package (or sub-package) -> top-level names it must never import, at any depth of the code.
FORBIDDEN: dict[str, set[str]] = {
    # The core knows no queue library and no HTTP server: actors/ and service/api/ adapt it.
    "service": {"dramatiq", "pika", "aio_pika", "aiormq", "aiohttp", "service.api", "actors", "cli"},
    "service/api": {"dramatiq", "pika", "aio_pika", "aiormq", "actors", "cli"},
    # The worker's adapters may call out over HTTP (webhooks), but serve none with aiohttp.
    "actors": {"service.api", "aiohttp.web", "cli"},
    "cli": set(),
}
#: Nothing in production imports what only developers and tests have.
DEV_ONLY = {"devtools", "tests", "bench"}


def modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, with each of its parents (``a.b.c`` gives a, a.b, a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [node.module]
        else:
            continue
        for name in found:
            parts = name.split(".")
            names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


def rule_for(path: Path) -> tuple[str, set[str]]:
    relative = path.relative_to(ROOT).as_posix()
    owner = max((key for key in FORBIDDEN if relative.startswith(key + "/")), key=len)
    return owner, FORBIDDEN[owner] | DEV_ONLY


@pytest.mark.parametrize("path", modules(*PRODUCTION), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_production_code_imports_only_what_its_folder_may(path: Path) -> None:
    owner, forbidden = rule_for(path)
    assert imported(path) & forbidden == set(), f"{owner}/ may not import these"


def test_the_rules_see_real_imports() -> None:
    # The check itself: a module known to import dramatiq is seen to
    assert "dramatiq" in imported(ROOT / "actors" / "broker.py")
    assert "service.api.app" in imported(ROOT / "cli" / "main.py")


def test_no_two_modules_share_a_name() -> None:
    names = Counter(path.stem for path in modules(*PACKAGES) if path.stem not in ("__init__", "__main__"))
    assert [name for name, count in names.items() if count > 1] == []


def test_no_two_classes_share_a_name() -> None:
    classes = Counter(
        node.name
        for path in modules(*PACKAGES)
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.ClassDef)
    )
    assert [name for name, count in classes.items() if count > 1] == []


def test_the_wheel_leaves_the_dev_tooling_out() -> None:
    import tomllib

    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["packages"]) == set(PRODUCTION)


OURS = {*PACKAGES, "tests", "bench"}


def private_uses(path: Path) -> list[str]:
    """Where ``path`` touches a private name (``_x``, not a dunder) of a module that is not ours:
    ``from lib import _x``, ``import lib._x``, or ``lib.sub._x`` through an imported library."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    libraries: set[str] = set()  # local names bound to another library's modules
    found: list[str] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in OURS:
                    libraries.add(alias.asname or alias.name.split(".")[0])
                    if any(private(part) for part in alias.name.split(".")):
                        found.append(f"{path.name}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OURS:
                continue
            for alias in node.names:
                if private(alias.name) or any(private(part) for part in node.module.split(".")):
                    found.append(f"{path.name}:{node.lineno} from {node.module} import {alias.name}")
                else:
                    libraries.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in libraries:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "path",
    modules(*PACKAGES, "tests", "bench"),
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_no_code_reaches_into_another_librarys_private_names(path: Path) -> None:
    assert private_uses(path) == []


def test_the_private_name_check_sees_them(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import somelib\nfrom somelib.adapters import _Adapter\n"
        "from service.job import _private_of_ours\nx = somelib.adapters._x\n"
    )
    assert len(private_uses(sample)) == 2
