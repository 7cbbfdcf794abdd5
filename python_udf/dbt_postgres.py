"""dbt-duckdb plugin that attaches the user's Postgres database to DuckDB.

Used by the ``postgres`` target in profiles/profiles.yml::

    plugins:
      - module: python_udf.dbt_postgres
        alias: postgres_attach
        config:
          attach_as: pg

DuckDB stays the engine: every connection dbt opens loads DuckDB's postgres
extension and attaches the database under ``attach_as``, so models read
``pg.<schema>.post_text_df`` and write the published tables there. The
connection settings and the attach itself live in python_udf.pg_connection;
dbt-duckdb's built-in postgres plugin takes a DSN and logs it, password
included, which is why the project has its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from dbt.adapters.duckdb.plugins import BasePlugin

from .logs import get_logger
from .pg_connection import PostgresSettings, attach_postgres, check_identifier, load_dotenv_file

log = get_logger()


class Plugin(BasePlugin):
    """Attach Postgres to every connection of the ``postgres`` target.

    Plugin config (profiles.yml): ``attach_as`` (the DuckDB name of the
    database, default ``pg``) and optionally ``dotenv_path``. Settings are
    read once, when dbt creates the plugin.

    :raises PostgresSettingsError: from ``initialize``, when POSTGRES_* are
        incomplete.
    :raises PostgresAttachError: from ``configure_connection``.
    """

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.attach_as = str(plugin_config.get("attach_as") or "pg")
        check_identifier("attach_as", self.attach_as)
        load_dotenv_file(plugin_config.get("dotenv_path") or _project_dotenv())
        self.settings = PostgresSettings.from_env(dotenv=False)

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        attach_postgres(conn, self.settings, self.attach_as)
        # dbt opens a connection per node or so; say it once per run.
        if not getattr(self, "_announced", False):
            log.info("attached Postgres %s as %s", self.settings.describe(), self.attach_as)
            self._announced = True


def _project_dotenv() -> Path | None:
    """``<project dir>/.env`` when dbt was given a project dir holding one.

    Without it, load_dotenv_file looks upwards from the working directory,
    which finds the repo root's .env whenever dbt runs inside the repo.
    """
    from dbt.flags import get_flags

    project_dir = getattr(get_flags(), "PROJECT_DIR", None)
    candidate = Path(project_dir) / ".env" if project_dir else None
    return candidate if candidate is not None and candidate.is_file() else None
