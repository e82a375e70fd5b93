"""What a rules directory declares so far: the tables later sections and rules are checked against."""
from __future__ import annotations

from collections.abc import Mapping

import attrs

from rulecrm.rulefile.model import Cap, Channel, Contact, Lifecycle, Product, Rule, Shop, Source
from rulecrm.rulefile.report import Report


@attrs.frozen
class ChannelTypeInfo:
    """A channel type a plugin provides: its setting keys besides `type`, and which are required.

    A required setting `x` may also be given as `x_env` (read from the environment). The plugin's
    description and each setting's help are only shown to people (`rulecrm schema`), never checked.
    """

    name: str
    settings: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()
    thread_safe: bool = False  # its instances may be called from several threads (`concurrency` applies)
    description: str = attrs.field(default="", eq=False)
    setting_help: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False)  # (setting, help)


BUILTIN_CHANNEL_TYPES = {
    "console": ChannelTypeInfo("console", thread_safe=True),
    "jsonl": ChannelTypeInfo("jsonl", frozenset({"path"}), thread_safe=True),
    "memory": ChannelTypeInfo("memory", thread_safe=True),
}
ADDRESSLESS_CHANNEL_TYPES = frozenset({"console", "jsonl", "memory"})


@attrs.define
class Declared:
    """Filled section by section across every file, in file order; `complete` is False when some
    file could not be read, so references to names it might have declared are not reported."""

    channel_types: Mapping[str, ChannelTypeInfo]
    functions: frozenset[str] = frozenset()
    shop: Shop | None = None
    lifecycle: Lifecycle | None = None
    products: dict[str, Product] = attrs.field(factory=dict)
    channels: dict[str, Channel] = attrs.field(factory=dict)
    contacts: dict[str, Contact] = attrs.field(factory=dict)
    caps: dict[str, Cap] = attrs.field(factory=dict)
    rules: list[Rule] = attrs.field(factory=list)
    rule_count: int = 0
    complete: bool = True
    _sources: dict[tuple[str, str], Source] = attrs.field(factory=dict)
    _names: dict[str, set[str]] = attrs.field(factory=dict)  # kind -> names, for `known` (asked once per rule)

    def claim(self, report: Report, what: str, name: str, at) -> bool:
        """Record where `name` is declared; False (and an error at `at`) if it already was."""
        first = self._sources.get((what, name))
        if first is not None:
            report.error(at, f"duplicate {what} {name!r}: already declared at {first}",
                         hint=f"{what} names must be unique across the rules directory")
            return False
        self._sources[(what, name)] = report.source(at)
        self._names.setdefault(what, set()).add(name)
        return True

    def known(self, what: str) -> set[str]:
        """Every name declared as `what`, including ones whose declaration has errors (do not change it)."""
        return self._names.get(what, set())

    def channel_names(self) -> set[str]:
        return {"console", *self.known("channel")}

    def channel_type(self, name: str) -> str | None:
        if name in self.channels:
            return self.channels[name].type
        return "console" if name == "console" else None

    @property
    def any_cycle(self) -> bool:
        return any(product.cycle is not None for product in self.products.values())
