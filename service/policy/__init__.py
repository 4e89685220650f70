"""Policy: which tool calls are allowed, denied, rate-limited or held for approval.

`load_policy(path)` reads `config/policy.json` once into an immutable `Policy`;
`policy.evaluate(grant, server, tool, arguments, now=...)` answers with a `Verdict` (cached, no
I/O; a rule's `cases` read the arguments through CEL conditions, `service.policy.conditions`);
`service.policy.limits.consume` counts calls against the verdict's `Limit`s in the database;
`redact_arguments` / `args_digest` prepare arguments for the audit and for binding approvals;
`explain` says in words why a call gets its verdict. The file format is in `rules.py`, the key
patterns and their specificity order in `patterns.py`.
"""

import typing as _typing

from service.lazy import lazy_exports as _lazy_exports
from service.policy.redaction import args_digest, canonical_json, redact_arguments
from service.policy.verdict import (
    ApprovalSpec,
    Approver,
    Limit,
    ToolChangeNote,
    ToolChangeRule,
    Verdict,
    with_tool_change,
)

if _typing.TYPE_CHECKING:
    from service.policy.compiler import load_policy
    from service.policy.engine import Policy
    from service.policy.explain import explain
    from service.policy.limits import LimitOutcome, consume, prune

_LAZY = {
    "load_policy": "service.policy.compiler",
    "Policy": "service.policy.engine",
    "explain": "service.policy.explain",
    "LimitOutcome": "service.policy.limits",
    "consume": "service.policy.limits",
    "prune": "service.policy.limits",
}
"""Names whose modules are imported on first use (PEP 562): the compiler, the engine and the limits bring CEL
(protobuf) and the rule models, which the approvals domain does not need to record a vote, and `holdgate approve`
on the local database imports the approvals domain (tests/test_cli_imports.py pins it). The verdict and the
redaction helpers are plain Python and load at once."""


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)


__all__ = [
    "ApprovalSpec",
    "Approver",
    "Limit",
    "LimitOutcome",
    "Policy",
    "ToolChangeNote",
    "ToolChangeRule",
    "Verdict",
    "args_digest",
    "canonical_json",
    "consume",
    "explain",
    "load_policy",
    "prune",
    "redact_arguments",
    "with_tool_change",
]
