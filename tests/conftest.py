from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from incidents import Store, StoreConfig
from tests.support.databases import (
    copy_sqlite_template,
    create_scratch_postgres_database,
    drop_scratch_postgres_database,
    migrated_store,
    run_outside_loop,
    truncate_postgres,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end files first. `make test` hands whole files to two workers in this order, and
    those files mostly wait on real time: started first, each runs beside the short tests instead of
    leaving one worker alone with a long file at the end. (A stable sort: the order within each kind
    stays the collection's, the same on every worker, as pytest-xdist requires.)"""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated, throw-away PostgreSQL database for the whole test session."""
    url = run_outside_loop(create_scratch_postgres_database())
    try:
        run_outside_loop(migrate(url))
        yield url
    finally:
        run_outside_loop(drop_scratch_postgres_database(url))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_outside_loop(migrate(f"sqlite:///{path}"))
    return path


async def migrate(url: str) -> None:
    store = await migrated_store(url)
    await store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The incident store on both backends, empty and migrated for each test."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        url = copy_sqlite_template(template, tmp_path / "incidents.db")
        instance = Store.from_config(StoreConfig(url=url))
        yield instance
        await instance.dispose()
    else:
        url = request.getfixturevalue("postgres_url")
        instance = Store.from_config(StoreConfig(url=url, pool_size=20))
        await truncate_postgres(instance)
        yield instance
        await instance.dispose()


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[Store]:
    """PostgreSQL only: for what SQLite cannot do (concurrent workers, LISTEN/NOTIFY, Grafana SQL)."""
    instance = Store.from_config(StoreConfig(url=postgres_url, pool_size=20))
    await truncate_postgres(instance)
    yield instance
    await instance.dispose()
