"""Find the rule files, read every section of every file, and build the RuleSet or the diagnostics."""
from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from rulecrm.errors import Diagnostic, RuleFileError
from rulecrm.rulefile.caps import read_caps
from rulecrm.rulefile.channels import read_channels, read_contacts
from rulecrm.rulefile.declared import BUILTIN_CHANNEL_TYPES, ChannelTypeInfo, Declared
from rulecrm.rulefile.model import Channel, Lifecycle, RuleSet, Shop
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.rules import read_rules
from rulecrm.rulefile.sections import read_lifecycle, read_products, read_shop
from rulecrm.rulefile.yamlpos import Map, compose, decode, describe
from rulecrm.suggest import did_you_mean
from rulecrm.timeutil import get_zone

__all__ = ["ChannelTypeInfo", "check_rules", "load_rules", "rule_files"]

SECTIONS = ("shop", "products", "channels", "contacts", "caps", "lifecycle", "rules")
# Read in this order across all files, so every reference can see every declaration.
_READERS = (
    ("shop", read_shop),
    ("lifecycle", read_lifecycle),
    ("products", read_products),
    ("channels", read_channels),
    ("contacts", read_contacts),
    ("caps", read_caps),
)
_SUFFIXES = (".yaml", ".yml")


def rule_files(path) -> list[str]:
    """The files a rules path stands for: the file itself, or a directory's *.yaml/*.yml in name order."""
    text = os.fspath(path)
    if os.path.isdir(text):
        names = sorted(entry.name for entry in os.scandir(text) if entry.name.endswith(_SUFFIXES) and entry.is_file())
        return [os.path.join(text, name) for name in names]
    return [text]


def check_rules(
    path,
    *,
    channel_types: Mapping[str, ChannelTypeInfo] | None = None,
    functions: Collection[str] = (),
) -> tuple[RuleSet | None, list[Diagnostic]]:
    """Validate a rules file or directory: the RuleSet (None when there are errors) and every diagnostic,
    sorted by path, line and column."""
    with _collection_paused():
        return _check_rules(path, channel_types=channel_types, functions=functions)


@contextlib.contextmanager
def _collection_paused():
    """Reading rules builds one large graph of objects that all stay alive (the YAML nodes, then the
    rule set): CPython's cyclic collector would walk it again and again and free nothing, about a
    sixth of `rulecrm check`. Automatic collection resumes after (unless it was off already)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_rules(path, *, channel_types, functions) -> tuple[RuleSet | None, list[Diagnostic]]:
    sink: list[Diagnostic] = []
    declared = Declared({**BUILTIN_CHANNEL_TYPES, **(channel_types or {})}, frozenset(functions))
    files = rule_files(path)
    documents = []
    for file in files:
        documents.extend(_read_file(file, sink, declared))
    if not files:
        sink.append(Diagnostic(os.fspath(path), 1, 1, "error", "no rule files (*.yaml, *.yml) in this directory"))
    for name, read in _READERS:
        for report, _, sections in documents:
            if name in sections:
                read(report, *sections[name], declared)
    for report, lines, sections in documents:
        if "rules" in sections:
            read_rules(report, *sections["rules"], declared, lines)
    sink.sort(key=lambda d: (d.path, d.line, d.column))
    if any(d.is_error for d in sink):
        return None, sink
    return _ruleset(declared, files, sink), sink


def load_rules(path, **options) -> RuleSet:
    """The RuleSet of a rules path; raises RuleFileError carrying every diagnostic if any is an error."""
    ruleset, diagnostics = check_rules(path, **options)
    if ruleset is None:
        raise RuleFileError(diagnostics)
    return ruleset


def _read_file(file: str, sink: list[Diagnostic], declared: Declared) -> list:
    """(report, lines, {section: (key node, value node)}) for each document of one file."""
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        sink.append(Diagnostic(file, 1, 1, "error", f"cannot read the file: {exc.strerror or exc}"))
        declared.complete = False
        return []
    text, problem = decode(data, file)
    if problem is not None:
        sink.append(problem)
        declared.complete = False
        return []
    parsed = compose(text, file)
    sink.extend(parsed.diagnostics)
    if parsed.broken:
        declared.complete = False
    report = Report(file, sink)
    lines = text.splitlines()
    return [(report, lines, _sections(report, root)) for root in parsed.documents if root is not None]


def _sections(report: Report, root) -> dict:
    if isinstance(root, Map):
        found = {}
        for key, value in root.pairs:
            if key.text in SECTIONS:
                found[key.text] = (key, value)
            else:
                report.error(key, f"unknown section {key.text!r}", expected="one of " + ", ".join(SECTIONS),
                             found=repr(key.text), hint=did_you_mean(key.text, SECTIONS))
        return found
    if not (getattr(root, "kind", None) == "null"):
        report.error(root, "a rule file is a mapping of sections", expected="one of " + ", ".join(SECTIONS),
                     found=describe(root))
    return {}


def _ruleset(declared: Declared, files: list[str], diagnostics: list[Diagnostic]) -> RuleSet:
    channels = tuple(declared.channels.values())
    if "console" not in declared.channels:
        channels += (Channel("console", "console"),)
    return RuleSet(
        shop=declared.shop or Shop("UTC", get_zone("UTC")),
        products=tuple(declared.products.values()),
        channels=channels,
        contacts=tuple(declared.contacts.values()),
        caps=tuple(declared.caps.values()),
        lifecycle=declared.lifecycle or Lifecycle(),
        rules=tuple(declared.rules),
        files=tuple(files),
        warnings=tuple(d for d in diagnostics if not d.is_error),
    )
