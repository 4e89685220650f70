"""Policy: which tool calls are allowed, denied, rate-limited or held for approval.

`load_policy(path)` reads `config/policy.json` once into an immutable `Policy`;
`policy.evaluate(grant, server, tool, arguments, now=...)` answers with a `Verdict` (cached, no
I/O; a rule's `cases` read the arguments through CEL conditions, `service.policy.conditions`);
`service.policy.limits.consume` counts calls against the verdict's `Limit`s in the database;
`redact_arguments` / `args_digest` prepare arguments for the audit and for binding approvals;
`explain` says in words why a call gets its verdict. The file format is in `rules.py`, the key
patterns and their specificity order in `patterns.py`.
"""

from service.policy.compiler import load_policy
from service.policy.engine import Policy
from service.policy.explain import explain
from service.policy.limits import LimitOutcome, consume, prune
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
