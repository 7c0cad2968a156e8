"""Schema migrations: numbered SQL pairs in ``migrations/``, recorded in a table.

``up`` applies every missing migration in order, ``down`` rolls back the newest ``steps``. Each
migration runs in its own transaction together with its bookkeeping row, and the whole run holds
a PostgreSQL advisory lock, so running twice, or from two processes at once, is safe.

The migrations make only what the service owns. The rollup tables it reads are the platform's;
``up`` with ``rollup_tables`` first makes them where missing (``rollup_tables.sql``: development,
tests and demos).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.errors import MigrationMismatch
from service.rollups import RollupTables
from service.settings import Settings
from service.sql import QUERIES, render


def _migrations_dir() -> Path:
    """``migrations/`` in a source checkout (editable install), or the copy a wheel carries."""
    packaged = Path(__file__).resolve().parent / "_migrations"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()
_FILE = re.compile(r"(\d{4})_(\w+)\.(up|down)\.sql", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)


def rollup_tables_ddl(tables: RollupTables, billing_currency: str) -> str:
    """``rollup_tables.sql`` for ``tables``, rows naming no currency in ``billing_currency``."""
    if not _CURRENCY.fullmatch(billing_currency):
        raise ValueError(f"{billing_currency!r} is not a currency code (three capital letters)")
    template = (MIGRATIONS_DIR / "rollup_tables.sql").read_text("utf-8")
    values = {**tables.placeholders(), "billing_currency": f"'{billing_currency}'"}
    return render({"rollup_tables": template}, values)["rollup_tables"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


async def _run(conn: asyncpg.Connection, sql: str) -> None:
    # A side that is only comments (a migration emptied since) is nothing to run; PostgreSQL's
    # empty-query reply is one the driver does not take.
    if any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines()):
        await conn.execute(sql)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[tuple[int, str], dict[str, str]] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.fullmatch(path.name)
        if match:
            key = (int(match.group(1)), match.group(2))
            found.setdefault(key, {})[match.group(3)] = path.read_text("utf-8")
    migrations = []
    for (version, name), sides in sorted(found.items()):
        if set(sides) != {"up", "down"}:
            raise ValueError(f"migration {version:04d}_{name} needs both an .up.sql and a .down.sql")
        migrations.append(Migration(version, name, sides["up"], sides["down"]))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return migrations


async def _locked(conn: asyncpg.Connection, migrations: list[Migration]) -> set[int]:
    """Take the lock; the versions applied, each checked against the file of its number."""
    await conn.execute(QUERIES["migrations_lock"])
    await conn.execute(QUERIES["migrations_create_table"])
    applied = {row["version"]: row["name"] for row in await conn.fetch(QUERIES["migrations_applied"])}
    for migration in migrations:
        name = applied.get(migration.version)
        if name is not None and name != migration.name:
            raise MigrationMismatch(
                f"migration {migration.version:04d} ran here as {name!r}, but this code's is"
                f" {migration.name!r}: the database ran a migration this code does not have"
            )
    return set(applied)


async def migrate_up(
    database_url: str,
    directory: Path = MIGRATIONS_DIR,
    *,
    rollup_tables: RollupTables | None = None,
    billing_currency: str = Settings().billing_currency,
) -> list[str]:
    """Apply every migration not yet applied; return the names applied. With ``rollup_tables``
    (``--with-rollups``), first make those tables where missing, rows that name no currency in
    ``billing_currency`` (BILLING_CURRENCY)."""
    migrations = load_migrations(directory)
    ddl = rollup_tables_ddl(rollup_tables, billing_currency) if rollup_tables is not None else None
    conn = await asyncpg.connect(database_url)
    try:
        applied = await _locked(conn, migrations)
        if ddl is not None:
            async with conn.transaction():
                await conn.execute(ddl)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await _run(conn, migration.up)
                await conn.execute(QUERIES["migrations_record"], migration.version, migration.name)
            done.append(f"{migration.version:04d}_{migration.name}")
        return done
    finally:
        await conn.execute(QUERIES["migrations_unlock"])
        await conn.close()


async def migrate_down(database_url: str, steps: int, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Roll back the newest ``steps`` applied migrations; return the names rolled back."""
    known = load_migrations(directory)
    migrations = {m.version: m for m in known}
    conn = await asyncpg.connect(database_url)
    try:
        applied = sorted(await _locked(conn, known), reverse=True)
        done = []
        for version in applied[:steps]:
            migration = migrations[version]
            async with conn.transaction():
                await _run(conn, migration.down)
                await conn.execute(QUERIES["migrations_forget"], version)
            done.append(f"{migration.version:04d}_{migration.name}")
        return done
    finally:
        await conn.execute(QUERIES["migrations_unlock"])
        await conn.close()
