"""The CLI's side of the operator socket (service/operator/socket_server.py): ask a running holdgate on this host.

Standard library only: this module is on the start-up path of `holdgate approve`, `deny` and `decisions list`
(service/cli.py's lazy-import rule); the point of asking the service is not importing the database stack.

`ask` returns the service's answer, or None whenever the service cannot answer for the database this command
would open: no socket (no service, or `HOLDGATE_OPERATOR_SOCKET=false`), a stale one, a service on another
database, a path too long for a Unix socket. The caller then opens the database itself, as before, so asking
first never changes what a command does, only how soon it is done.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from service.locations import OPERATOR_SOCKET_MAX_PATH_BYTES, database_fingerprint, local_database

TIMEOUT_S = 60.0
"""A bulk vote on thousands of decisions takes seconds; nothing here waits for a person."""


class SocketRefused(Exception):
    """The service read the request and refused it (its `error`): a malformed request or a user not allowed.

    Not a reason to fall back: the same request on the database would be as wrong, or would bypass the refusal.
    """


def ask(request: dict[str, Any]) -> dict[str, Any] | None:
    """The running holdgate's answer to `request` (service/operator/requests.py), or None: do it yourself."""
    local = local_database()
    path = local.operator_socket
    try:
        if len(os.fsencode(path)) > OPERATOR_SOCKET_MAX_PATH_BYTES or not path.is_socket():
            return None
    except OSError:  # a data directory this user may not enter: the database path says so clearly
        return None
    line = json.dumps({"database": database_fingerprint(local.url), "request": request}).encode() + b"\n"
    reply = _exchange(path, line)
    if reply is None or reply.get("other_database"):
        return None
    if "error" in reply:
        raise SocketRefused(str(reply["error"]))
    answer = reply.get("answer")
    return answer if isinstance(answer, dict) else None


def _exchange(path: Path, line: bytes) -> dict[str, Any] | None:
    """Send one line and read one back; None if no service accepted it (refused, stale, vanished before reading)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT_S)
        try:
            conn.connect(os.fspath(path))
        except OSError:
            return None  # a stale socket of a killed service, or one we may not open
        try:
            conn.sendall(line)
            conn.shutdown(socket.SHUT_WR)
            with conn.makefile("rb") as stream:
                reply_line = stream.readline()
        except OSError:
            reply_line = b""
    if not reply_line:
        # Connected, then nothing: the service stopped while we asked. Whether it carried out a vote is unknown
        # here, and doing it again on the database is safe (a second vote by the operator is refused, not counted).
        return None
    try:
        reply = json.loads(reply_line)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None
