"""The local operator's commands (`holdgate approve`, `deny`, `decisions list` without `--url`).

`requests` is what each command asks and how it is carried out on the approvals service; the CLI does it on the
database itself, or first asks a running holdgate on this host to do it through its operator socket
(`socket_server` in the service, `socket_client` in the CLI), which answers without the CLI importing the
database stack. This package's `__init__` imports nothing: the client is on the CLI's start-up path.
"""
