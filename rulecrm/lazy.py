"""Package attributes imported on first use (PEP 562), for packages that every command imports.

rulecrm imports each plugin's package for its entry point in every command, `check` included, so a
package that re-exports its channel class would load the whole channel (HTTP, e-mail, logging,
masking) to declare it. With `lazy_exports`, `from package import Name` still works and loads
`Name`'s module only then.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for the package whose globals are `namespace`: `exports` maps each
    public name to the module defining it (absolute, or relative to the package: ".channel")."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later look-ups find it without calling this
        return value

    return __getattr__
