"""Where holdgate keeps its files in the data directory, and which database the local settings name, read cheaply.

The settings model (service/settings.py) is the authority on configuration, but building it imports pydantic and
pydantic-settings, a fifth of a command's start. The operator's quick commands (`holdgate approve`, `deny`,
`decisions list`) first ask a running holdgate on its operator socket (service/operator/), which lives in the data
directory; finding it, and checking that the service there serves the database the command would open, needs only
`HOLDGATE_DATA_DIR` and `HOLDGATE_DATABASE_URL`. `local_database` reads those two as the settings do (environment
first, then the `.env` file, names in any case); `Settings.effective_database_url` and it share `database_url`, so
the two cannot disagree on what a configuration means.

Standard library only (and python-dotenv, which pydantic-settings uses for `.env`, imported only when the file
exists): this module is on the CLI's start-up path (service/cli.py's lazy-import rule).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DATABASE_FILE = "holdgate.db"
"""The default SQLite database, in the data directory."""
OPERATOR_SOCKET_FILE = "holdgate.sock"
"""The running service's socket for the local operator's commands, in the data directory (0600)."""
OPERATOR_SOCKET_MAX_PATH_BYTES = 107
"""The longest operator socket path: sockaddr_un's sun_path holds 108 bytes with the terminating NUL (Linux; 104 on
the BSDs). The service binds nothing longer, and the CLI does not look for one."""
DEFAULT_DATA_DIR = Path("data")
ENV_FILE = ".env"
"""The settings' `.env` file, relative to the working directory (Settings.model_config)."""


def database_url(data_dir: Path, configured: str | None) -> str:
    """The database holdgate opens: the configured URL, else the SQLite file in the data directory."""
    if configured:
        return configured
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILE).resolve()}"


def database_fingerprint(url: str) -> str:
    """A database URL as the operator socket compares it: a digest, so a password in the URL never travels."""
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class LocalDatabase:
    """The data directory and database the local settings name."""

    data_dir: Path
    url: str

    @property
    def operator_socket(self) -> Path:
        return (self.data_dir / OPERATOR_SOCKET_FILE).resolve()


def local_database(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> LocalDatabase:
    """`HOLDGATE_DATA_DIR` and `HOLDGATE_DATABASE_URL` as the settings read them: the environment (any case, as
    pydantic-settings matches names case-insensitively), then `.env` in the working directory, then the defaults.

    The settings still validate everything when the command opens the database itself; this only finds a service
    to ask, and the service refuses a request naming another database than its own.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    values = {name.lower(): value for name, value in _env_file(cwd / ENV_FILE).items() if value is not None}
    values |= {name.lower(): value for name, value in environ.items()}
    data_dir = Path(values["holdgate_data_dir"]) if "holdgate_data_dir" in values else DEFAULT_DATA_DIR
    if not data_dir.is_absolute():
        data_dir = cwd / data_dir
    return LocalDatabase(data_dir, database_url(data_dir, values.get("holdgate_database_url")))


def _env_file(path: Path) -> Mapping[str, str | None]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return dotenv_values(path)
