"""The operator socket: a running holdgate carries out the local operator's commands for the CLI on its host.

`holdgate approve`, `deny` and `decisions list` on the local database spend most of their second importing the
database stack (pydantic, SQLAlchemy, SQLModel and the tables) before they can vote. The service has all of it
loaded: asked on this Unix socket (`data_dir/holdgate.sock`), it votes or lists as the local operator with
service/operator/requests.py, the code the CLI would run itself, and the CLI (service/operator/socket_client.py)
starts in the time of its own imports.

Who may ask: the socket is mode 0600 in the 0700 data directory, and a peer whose user is neither the service's
nor root is refused (SO_PEERCRED, where the platform has it), so the socket grants exactly what reading the
database file grants, the local operator's standing in the CLI. The wire: one JSON object per line,
`{"database": fingerprint, "request": {...}}` in, `{"answer": {...}}` or `{"error": why}` out, then the service
closes. A request naming another database (`locations.database_fingerprint`) gets `{"other_database": true}`:
the CLI then opens its own. Bad input of any kind (not JSON, too long, nested, unknown fields, NUL) gets an
error line and changes nothing; a client gone mid-request changes nothing more than the vote it asked for.

Never fatal to the service: a socket that cannot be bound (a path too long for AF_UNIX, a read-only directory,
another live holdgate already serving it) is a warning, and the CLI opens the database as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.locations import OPERATOR_SOCKET_MAX_PATH_BYTES
from service.operator.requests import REQUEST, CastVotes, ListDecisions

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
"""A request line's limit: a bulk vote naming 10,000 ids is ~250 KB."""
READ_TIMEOUT_S = 10.0
"""A client that connects and says nothing is dropped after this (the CLI writes its line at once)."""

Perform = Callable[[ListDecisions | CastVotes], Awaitable[dict[str, Any]]]


class OperatorSocket:
    """Serves `path` while started; `perform` carries out a validated request (requests.perform, bound to the
    service's approvals), `database` is the service's database fingerprint."""

    def __init__(self, path: Path, *, database: str, perform: Perform) -> None:
        self.path = path
        self.database = database
        self.perform = perform
        self._server: asyncio.Server | None = None
        self._inode: int | None = None

    async def start(self) -> bool:
        """Bind and serve; False (with a warning saying why) when this process cannot serve the socket."""
        if not self.path.parent.is_dir():
            logger.info("operator socket off: no data directory %s (the CLI opens the database)", self.path.parent)
            return False
        # Bound under a name of its own, made private, then renamed over the path: no moment in which another user
        # could connect, and a stale socket of a killed process is replaced in one step.
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        if len(os.fsencode(staging)) > OPERATOR_SOCKET_MAX_PATH_BYTES:
            logger.warning(
                "operator socket off: %s is longer than a Unix socket path may be (%d bytes); the CLI opens the "
                "database itself (a shorter HOLDGATE_DATA_DIR brings it back)",
                self.path,
                OPERATOR_SOCKET_MAX_PATH_BYTES,
            )
            return False
        if await asyncio.to_thread(_answers, self.path):
            logger.warning(
                "operator socket off: another holdgate process already serves %s (replicas sharing a data directory)",
                self.path,
            )
            return False
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        try:
            server = await asyncio.start_unix_server(self._serve, path=staging, limit=MAX_REQUEST_BYTES)
            os.chmod(staging, 0o600)
            os.replace(staging, self.path)
            self._inode = self.path.stat().st_ino
        except OSError as exc:
            logger.warning("operator socket off: cannot serve %s (%s); the CLI opens the database", self.path, exc)
            with contextlib.suppress(OSError):
                staging.unlink()
            return False
        self._server = server
        logger.debug("operator socket: serving %s", self.path)
        return True

    async def aclose(self) -> None:
        """Stop serving and remove the socket, unless another process has replaced it since."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._reply(reader, writer)
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the CLI is gone: what it asked is done or was never read
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await writer.wait_closed()

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        refusal = _refuse_peer(writer.get_extra_info("socket"))
        if refusal is not None:
            return {"error": refusal}
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return {"error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
        except asyncio.IncompleteReadError:
            return {"error": "the request ended before its newline"}
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return {"error": f"the request is not JSON: {exc}"[:300]}
        if not isinstance(message, dict) or not isinstance(message.get("request"), dict):
            return {"error": 'expected {"database": ..., "request": {...}}'}
        if message.get("database") != self.database:
            return {"other_database": True}
        try:
            request = REQUEST.validate_python(message["request"])
        except (ValidationError, RecursionError) as exc:
            return {"error": f"invalid request: {_first_error(exc)}"}
        try:
            return {"answer": await self.perform(request)}
        except Exception:
            logger.exception("operator socket: %s request failed", request.op)
            return {"error": "holdgate failed to carry out the request; its log says why"}


def _answers(path: Path) -> bool:
    """Whether a live process accepts connections on `path` (a stale socket of a killed one refuses them)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def _refuse_peer(sock: socket.socket | None) -> str | None:
    """Why the connecting process may not operate holdgate, or None: its user must be the service's or root."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None  # no credentials to read here: the file's mode 0600 is the check
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid in (os.getuid(), 0):
        return None
    return f"user {uid} may not operate this holdgate (it runs as user {os.getuid()})"


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(part) for part in first['loc']) or 'request'}: {first['msg']}"
    return "nested too deeply"
