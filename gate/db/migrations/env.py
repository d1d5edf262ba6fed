"""Alembic environment: the target is ``gate.db.metadata``. ``gate.db.migrate`` passes an
open connection (``config.attributes["connection"]``); plain ``alembic -c alembic.ini``
takes the URL from the ``sqlalchemy.url`` option when set, else from
``gate.settings.Settings`` (the same ``GATE_DATABASE_URL`` / ``GATE_DATA_DIR`` rules as the
server)."""

from __future__ import annotations

from alembic import context

from gate.db import make_engine, metadata

config = context.config


def _url() -> str:
    from gate.settings import Settings

    return config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        context.configure(connection=given, target_metadata=metadata, compare_type=True,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=metadata,
                              compare_type=True, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
