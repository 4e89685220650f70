"""Names a package exports but imports on first use (PEP 562), so a light command need not load heavy parts.

`holdgate approve` on the local database imports the approvals domain and the policy package; their call
holding, outbox, compiler, CEL and limits are needed only where they are used (tests/test_cli_imports.py pins
it). A package hands its lazy names to `lazy_exports` and binds the two functions it returns as its module-level
`__getattr__` and `__dir__`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose `names` map each lazy name to the module defining it.

    The first use of a name imports its module and stores the value in the package, so later uses are plain
    attribute reads; an unknown name is the usual AttributeError.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
