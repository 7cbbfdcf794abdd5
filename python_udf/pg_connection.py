"""Where the Postgres database is and how DuckDB attaches it.

Shared by the dbt plugin (python_udf.dbt_postgres), the loader and the
reader, and free of dbt imports so that the command line stays quick.

Connection settings come from the environment only (``POSTGRES_HOST``,
``POSTGRES_PORT``, ``POSTGRES_USER``, ``POSTGRES_PASSWORD``,
``POSTGRES_DATABASE``); a ``.env`` file found from the working directory
upwards fills in the ones the environment lacks. The password is never part
of a message, a ``repr`` or a statement that dbt logs: DuckDB receives it in
a temporary secret, which DuckDB redacts wherever it lists secrets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import duckdb

from .logs import get_logger

log = get_logger()

ENV_VARS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DATABASE")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
EXTENSION = "postgres"
_SECRET_PREFIX = "text_features_pg_"


class PostgresSettingsError(ValueError):
    """A POSTGRES_* variable is missing or malformed; the message names it."""


class PostgresAttachError(RuntimeError):
    """DuckDB could not load the extension or attach the database.

    The message names host, port, user and database, never the password.
    """


@dataclass(frozen=True)
class PostgresSettings:
    """Where and as whom to connect; ``password`` is never printed (see ``__repr__``)."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> "PostgresSettings":
        """Read POSTGRES_* from ``env`` (default ``os.environ``), after loading ``.env``.

        ``.env`` never overrides a variable that is already set. Host and port
        default to 127.0.0.1:5432; user and database are required.

        :raises PostgresSettingsError: a required variable is unset, or the
            port is not an integer in 1..65535.
        """
        if dotenv and env is None:
            load_dotenv_file()
        env = os.environ if env is None else env
        missing = [name for name in ("POSTGRES_USER", "POSTGRES_DATABASE") if not env.get(name)]
        if missing:
            raise PostgresSettingsError(
                f"{' and '.join(missing)} not set: the postgres target reads its connection "
                f"from {', '.join(ENV_VARS)} (environment or a .env file at the repo root)"
            )
        port_text = env.get("POSTGRES_PORT") or str(DEFAULT_PORT)
        try:
            port = int(port_text)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise PostgresSettingsError(f"POSTGRES_PORT={port_text!r} is not a port number (1..65535)")
        return cls(
            host=env.get("POSTGRES_HOST") or DEFAULT_HOST,
            port=port,
            user=env["POSTGRES_USER"],
            database=env["POSTGRES_DATABASE"],
            password=env.get("POSTGRES_PASSWORD") or None,
        )

    def __repr__(self) -> str:
        return f"PostgresSettings({self.describe()}, password={'set' if self.password else 'unset'})"

    def describe(self) -> str:
        """``user@host:port/database``, safe to log."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def psycopg_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (password only when set)."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.database}
        if self.password:
            kwargs["password"] = self.password
        return kwargs


def load_dotenv_file(path: str | os.PathLike | None = None) -> Path | None:
    """Load ``path`` or the nearest ``.env`` above the working directory.

    Variables already in the environment win. Returns the file read, if any.
    """
    from dotenv import find_dotenv, load_dotenv

    found = str(path) if path is not None else find_dotenv(usecwd=True)
    if not found or not Path(found).is_file():
        return None
    load_dotenv(found, override=False)
    return Path(found)


def load_postgres_extension(con: duckdb.DuckDBPyConnection) -> None:
    """Make DuckDB's postgres extension loadable on ``con`` and load it.

    Order: a copy already installed in DuckDB's extension directory; else the
    copy shipped in the ``duckdb-extension-postgres`` wheel (no internet
    needed); else DuckDB's own download.

    :raises PostgresAttachError: none of the three worked; the message gives
        the reason of each.
    """
    try:
        con.load_extension(EXTENSION)
        return
    except duckdb.Error:
        pass
    reasons = []
    installers = (
        ("the duckdb-extension-postgres wheel", lambda: _install_from_wheel(con)),
        ("DuckDB's extension repository", lambda: con.install_extension(EXTENSION)),
    )
    for how, install in installers:
        try:
            install()
            con.load_extension(EXTENSION)
        except (ImportError, duckdb.Error) as exc:
            reasons.append(f"from {how}: {exc}")
            continue
        log.info("installed DuckDB's postgres extension from %s", how)
        return
    raise PostgresAttachError(
        f"could not install DuckDB's postgres extension for duckdb {duckdb.__version__}: "
        + "; ".join(reasons)
        + ". Install duckdb-extension-postgres of the same version as duckdb, "
        "or let DuckDB reach extensions.duckdb.org"
    )


def _install_from_wheel(con: duckdb.DuckDBPyConnection) -> None:
    """INSTALL the extension file packaged in duckdb-extension-postgres.

    :raises ImportError: the package is not installed.
    :raises duckdb.Error: it holds no build for this duckdb version.
    """
    import duckdb_extensions

    duckdb_extensions.import_extension(EXTENSION, con=con)


def attach_postgres(
    con: duckdb.DuckDBPyConnection, settings: PostgresSettings, alias: str = "pg", *, read_only: bool = False
) -> None:
    """Load the extension and attach ``settings``' database as ``alias``.

    The password goes into a temporary secret named after the alias; the
    ATTACH statement names only the secret.

    :raises PostgresAttachError: the extension or the ATTACH failed (the
        message carries host, port, user and database, never the password).
    """
    check_identifier("attach_as", alias)
    taken = con.execute(
        "select path, type from duckdb_databases() where database_name = ?", [alias]
    ).fetchone()
    if taken is not None and taken[1] != "postgres":
        # e.g. the local file is pg.duckdb: DuckDB names its catalog pg, and
        # "attach if not exists ... as pg" would silently do nothing
        raise PostgresAttachError(
            f"cannot attach Postgres as {alias}: that name is already taken by the "
            f"{taken[1]} database {taken[0] or '(in memory)'}; a DuckDB file's name is its "
            f"catalog name, so rename the local file (POSTS_DUCKDB_PATH) or set another "
            "attach_as in profiles/profiles.yml"
        )
    load_postgres_extension(con)
    secret = _SECRET_PREFIX + alias
    parts = [
        "type postgres",
        f"host {_literal(settings.host)}",
        f"port {settings.port}",
        f"user {_literal(settings.user)}",
        f"database {_literal(settings.database)}",
    ]
    if settings.password:
        parts.append(f"password {_literal(settings.password)}")
    try:
        con.execute(f"create or replace temporary secret {secret} ({', '.join(parts)})")
    except duckdb.Error as exc:
        raise PostgresAttachError(
            f"could not create the connection secret for {settings.describe()}: "
            f"{_scrub(str(exc), settings.password)}"
        ) from None
    options = f"type postgres, secret {secret}" + (", read_only" if read_only else "")
    try:
        con.execute(f"attach if not exists '' as {alias} ({options})")
    except duckdb.Error as exc:
        raise PostgresAttachError(
            f"could not attach Postgres {settings.describe()} as {alias}: "
            f"{_scrub(str(exc), settings.password)}"
        ) from None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _scrub(message: str, secret: str | None) -> str:
    """The message with every occurrence of the secret (raw or SQL-quoted) masked."""
    if secret:
        for form in (secret.replace("'", "''"), secret):
            message = message.replace(form, "***")
    return message


def check_identifier(setting: str, value: str) -> None:
    if not value.replace("_", "").isalnum() or value[0].isdigit():
        raise PostgresSettingsError(f"{setting}={value!r} must be a plain identifier (letters, digits, _)")
