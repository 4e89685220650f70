"""The service's log: one handler, one format for holdgate's own lines, uvicorn's and the libraries'.

`HOLDGATE_LOG_FORMAT` picks the format:

- `text` (the default): `2026-12-02 05:01:02,345 INFO service.app: holdgate 0.1.0 ready: ...`, uvicorn's
  access lines included (`INFO uvicorn.access: 127.0.0.1:50312 - "POST /mcp/jobs HTTP/1.1" 200`);
- `json`: one JSON object per line, for a log pipeline: `time` (ISO 8601, UTC), `level`, `logger`, `message`,
  the fields of `service.logcontext` known when the line was written (`request_id`, `grant`, `server`, `tool`,
  `decision_id`), `exc_info` with a traceback; an access line also has `client_addr`, `method`, `path`,
  `http_version` and `status_code`.

Libraries' routine lines go to DEBUG (`RoutineAtDebug`): APScheduler writes two INFO lines per job run
("Running job", "executed successfully"; the approval sweep runs every 5 s) and watchfiles one per change
seen, which buried "APPROVAL NEEDED"; their warnings and errors keep their level.

`configure` applies it before anything logs, and returns the same configuration for uvicorn (`log_config`),
which applies it again as it starts, so its own loggers keep this handler instead of installing theirs.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

import pythonjsonlogger.core
import pythonjsonlogger.json

from service.logcontext import FIELDS

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROUTINE_LOGGERS = ("apscheduler", "watchfiles", "alembic.runtime.plugins")
"""Libraries whose INFO lines are routine: written at DEBUG instead (their warnings and errors are kept).
Alembic's plugin loader says "setup plugin …" nine times at every start."""
ACCESS_LOGGER = "uvicorn.access"
ACCESS_FIELDS = ("client_addr", "method", "path", "http_version", "status_code")
"""uvicorn's access line, `'%s - "%s %s HTTP/%s" %d'`, as named fields (its arguments, in this order)."""


class RoutineAtDebug(logging.Filter):
    """Writes the INFO lines of `ROUTINE_LOGGERS` (and their children) at DEBUG, shown only when the service's
    level is DEBUG; their warnings and errors pass as they are.

    A handler filter, so it sees the records of every child logger (`apscheduler.scheduler`,
    `apscheduler.executors.default`), whatever level a user gives them."""

    def __init__(self, loggers: tuple[str, ...] = ROUTINE_LOGGERS) -> None:
        super().__init__()
        self.loggers = loggers

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not _is_under(record.name, self.loggers):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def _is_under(name: str, loggers: tuple[str, ...]) -> bool:
    return any(name == logger or name.startswith(f"{logger}.") for logger in loggers)


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line, with the context fields (`service.logcontext`) and the access line's parts."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message", *FIELDS],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*pythonjsonlogger.core.RESERVED_ATTRS, "taskName", "color_message"],
            json_ensure_ascii=False,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for name in FIELDS:  # a field this line does not know is left out, not written as null
            if log_data.get(name) is None:
                log_data.pop(name, None)
        if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == len(ACCESS_FIELDS):
            log_data.update(zip(ACCESS_FIELDS, record.args, strict=True))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC with milliseconds: `2026-12-02T05:01:02.345Z`."""
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` for the service: one stderr handler that every logger propagates to."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"holdgate": formatter},
        "filters": {
            "context": {"()": "service.logcontext.ContextFilter"},
            "routine": {"()": RoutineAtDebug},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "holdgate",
                "filters": ["context", "routine"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own handlers would write its lines in its own format: they propagate to ours instead.
            name: {"handlers": [], "propagate": True, "level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        }
        | {name: {"level": "DEBUG"} for name in ROUTINE_LOGGERS},  # `RoutineAtDebug` decides what shows
    }


def configure(log_format: LogFormat, level: str) -> dict[str, Any]:
    """Apply the service's logging (before anything logs); returns the configuration, for uvicorn's `log_config`."""
    config = logging_config(log_format, level)
    logging.config.dictConfig(config)
    return config
