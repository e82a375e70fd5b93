"""YAML to small positioned nodes: every scalar keeps its source text, line and column."""
from __future__ import annotations

import re
from typing import Any

import attrs
import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from rulecrm.errors import Diagnostic

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_KINDS = {
    _TAG + "str": "string",
    _TAG + "int": "integer",
    _TAG + "float": "number",
    _TAG + "bool": "boolean",
    _TAG + "null": "null",
    _TAG + "timestamp": "date",
}
_COLLECTION_TAGS = {_TAG + "map", _TAG + "seq"}
# Far beyond any real rule file, and below every libyaml's own limit (which differs between
# versions), so the diagnostic is ours and the same everywhere.
_MAX_DEPTH = 200


@attrs.define(slots=True, eq=False)
class Scalar:
    """`text` as written (after YAML unquoting), `value` as YAML reads it, `kind` its YAML type."""

    text: str
    value: Any
    kind: str  # string | integer | number | boolean | null | date
    line: int
    column: int
    style: str | None = None  # None (plain), "'", '"', "|" or ">"


@attrs.define(slots=True, eq=False)
class Seq:
    items: list
    line: int
    column: int


@attrs.define(slots=True, eq=False)
class Map:
    """Pairs in file order; keys are Scalars, unique, with `<<` merges already applied."""

    pairs: list
    line: int
    column: int


def describe(node) -> str:
    """The YAML type of a node and, for scalars, its value: for `found` in diagnostics."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    if node.kind == "null":
        return "null"
    text = node.text if len(node.text) <= 40 else node.text[:37] + "..."
    if node.kind == "string":
        return f"string {text!r}"
    return f"{node.kind} {text}"


@attrs.frozen
class Parsed:
    """The documents of one file (None for an empty document) and what went wrong reading it."""

    documents: tuple
    diagnostics: tuple[Diagnostic, ...]
    broken: bool  # the YAML itself could not be read to the end


def decode(data: bytes, path: str) -> tuple[str | None, Diagnostic | None]:
    """UTF-8 (a BOM is allowed) to text, or a positioned diagnostic for the first bad byte."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return None, Diagnostic(
            path, line, column, "error", "the file is not valid UTF-8 text",
            expected="UTF-8", found=f"byte 0x{data[exc.start]:02x}", hint="save the file as UTF-8",
        )


def compose(text: str, path: str) -> Parsed:
    """Read every document of `text`; duplicate keys and unsupported tags become diagnostics."""
    composer = _Composer(path)
    broken = False
    too_deep = _flow_too_deep(text)
    if too_deep is not None:
        composer.error(too_deep, _TOO_DEEP, hint="flatten the data")
        return Parsed((), tuple(composer.diagnostics), True)
    handlers = composer.handlers
    try:
        for event in yaml.parse(text, Loader=_Loader):
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
    except _NestedTooDeep as exc:
        composer.error(exc.where, _TOO_DEEP, hint="flatten the data")
        broken = True
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = "invalid YAML: " + (exc.problem or exc.context or "syntax error")
        if exc.context and exc.problem:
            message += f" ({exc.context})"
        composer.error(where, message)
        broken = True
    except yaml.reader.ReaderError as exc:
        composer.error(_offset_position(text, exc.position), f"invalid YAML: {exc.reason}",
                       found=f"character {exc.character!r}" if isinstance(exc.character, str) else None)
        broken = True
    except yaml.YAMLError as exc:
        composer.error((1, 1), f"invalid YAML: {exc}")
        broken = True
    return Parsed(tuple(composer.documents), tuple(composer.diagnostics), broken)


_TOO_DEEP = f"values nested deeper than {_MAX_DEPTH} levels"


class _NestedTooDeep(Exception):
    def __init__(self, where: tuple[int, int]):
        super().__init__(where)
        self.where = where


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    head = text[:offset]
    return head.count("\n") + 1, offset - (head.rfind("\n") + 1) + 1


def _flow_too_deep(text: str) -> tuple[int, int] | None:
    """libyaml slows down quadratically with bracket nesting; refuse absurd depths up front."""
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return None
    depth = 0
    for bracket in _BRACKETS.finditer(text):  # only the brackets: a large rules file has few of them
        if bracket.group() in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return _offset_position(text, bracket.start())
        elif depth:
            depth -= 1
    return None


_BRACKETS = re.compile(r"[\[\]{}]")


class _Composer:
    """Builds nodes from parser events without recursion, so nesting depth cannot crash it."""

    def __init__(self, path: str):
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self.documents: list = []
        self._stack: list = []  # open Seq / Map nodes
        self._pending: list = []  # per open Map: the key waiting for its value, or None
        self._anchors: dict[str, Any] = {}
        self._open: set[int] = set()
        self._root = None
        self._resolver = Resolver()
        self._untagged: dict[tuple, tuple] = {}  # (text, implicit, style) -> (value, kind) of untagged scalars
        self._constructor = SafeConstructor()
        # what each parser event does, by its class: a rule file is tens of thousands of events, most
        # of them scalars, and one look-up is cheaper than a chain of isinstance tests
        self.handlers = {
            yaml.ScalarEvent: self._on_scalar,
            yaml.SequenceStartEvent: self._on_start, yaml.MappingStartEvent: self._on_start,
            yaml.SequenceEndEvent: self._on_end, yaml.MappingEndEvent: self._on_end,
            yaml.AliasEvent: self._on_alias,
            yaml.DocumentStartEvent: self._on_document_start, yaml.DocumentEndEvent: self._on_document_end,
        }

    def error(self, where, message, *, expected=None, found=None, hint=None):
        line, column = where
        self.diagnostics.append(Diagnostic(self.path, max(line, 1), max(column, 1), "error", message,
                                           expected=expected, found=found, hint=hint))

    def _on_scalar(self, event) -> None:
        tag = event.tag
        if tag is None or tag == "!":  # untagged, as nearly every scalar of a rule file is
            style = event.style or None
            text = event.value
            key = (text, event.implicit, style)
            read = self._untagged.get(key)
            if read is None:
                read = self._untagged[key] = self._read_untagged(text, event.implicit, style)
            mark = event.start_mark
            node = Scalar(text, read[0], read[1], mark.line + 1, mark.column + 1, style)
        else:
            node = self._tagged_scalar(event)
        self._attach(node, event.anchor)

    def _on_start(self, event) -> None:
        self._check_collection_tag(event)
        line, column = self._position(event)
        if len(self._stack) >= _MAX_DEPTH:
            raise _NestedTooDeep((line, column))
        node = Seq([], line, column) if type(event) is yaml.SequenceStartEvent else Map([], line, column)
        if event.anchor is not None:
            self._anchors[event.anchor] = node
        self._open.add(id(node))
        self._stack.append(node)
        self._pending.append(None)

    def _on_end(self, event) -> None:
        node = self._stack.pop()
        self._pending.pop()
        self._open.discard(id(node))
        if type(node) is Map:
            self._finish_map(node)
        self._attach(node, None)

    def _on_alias(self, event) -> None:
        self._attach(self._alias(event), None)

    def _on_document_start(self, event) -> None:
        self._anchors = {}
        self._root = None

    def _on_document_end(self, event) -> None:
        self.documents.append(self._root)

    def _position(self, event) -> tuple[int, int]:
        return event.start_mark.line + 1, event.start_mark.column + 1

    def _tagged_scalar(self, event) -> Scalar:
        line, column = self._position(event)
        style = event.style or None
        tag = event.tag
        if tag not in _KINDS:
            self.error((line, column), f"unsupported YAML tag {tag!r}", expected="plain YAML values",
                       hint="remove the tag")
            value, kind = self._read_untagged(event.value, event.implicit, style)
            return Scalar(event.value, value, kind, line, column, style)
        value, kind = self._construct(tag, event.value, style)
        if kind is None:
            self.error((line, column), f"{event.value!r} cannot be read as {tag.rsplit(':', 1)[-1]}",
                       hint="remove the tag or fix the value")
            value, kind = event.value, "string"
        return Scalar(event.value, value, kind, line, column, style)

    def _read_untagged(self, text: str, implicit, style) -> tuple[Any, str]:
        """(value, kind) of an untagged scalar: what its text resolves to. The values are immutable (a
        string, number, boolean, null or timestamp), so a file's repeated keys and values share them."""
        tag = self._resolver.resolve(yaml.ScalarNode, text, implicit)
        value, kind = self._construct(tag, text, style)
        return (text, "string") if kind is None else (value, kind)

    def _construct(self, tag: str, text: str, style) -> tuple[Any, str | None]:
        kind = _KINDS.get(tag)
        if kind is None:
            return None, None
        if kind == "string":
            return text, kind
        node = yaml.ScalarNode(tag, text, style=style)
        try:
            return self._constructor.construct_object(node), kind
        except Exception:  # PyYAML raises IndexError, ValueError ... for malformed tagged scalars
            return None, None

    def _check_collection_tag(self, event) -> None:
        if event.tag not in (None, "!") and event.tag not in _COLLECTION_TAGS:
            self.error(self._position(event), f"unsupported YAML tag {event.tag!r}",
                       expected="plain YAML values", hint="remove the tag")

    def _alias(self, event):
        node = self._anchors.get(event.anchor)
        position = self._position(event)
        if node is None:
            self.error(position, f"unknown YAML alias *{event.anchor}",
                       hint="define the anchor (&name) before using it")
        elif id(node) in self._open:
            self.error(position, f"YAML alias *{event.anchor} refers to a value that contains it",
                       hint="a value cannot include itself")
            node = None
        if node is None:
            return Scalar("", None, "null", *position)
        return node

    def _attach(self, node, anchor) -> None:
        if anchor is not None:
            self._anchors[anchor] = node
        if not self._stack:
            self._root = node
            return
        parent = self._stack[-1]
        if type(parent) is Seq:
            parent.items.append(node)
            return
        pending = self._pending
        if pending[-1] is None:
            pending[-1] = (node,)
        else:
            parent.pairs.append((pending[-1][0], node))
            pending[-1] = None

    def _finish_map(self, node: Map) -> None:
        explicit, merged = [], []
        for key, value in node.pairs:
            if not isinstance(key, Scalar):
                self.error((key.line, key.column), "a mapping key must be a plain name",
                           found=describe(key), expected="a name")
            elif key.text == "<<" and key.style is None:
                merged.extend(self._merge_sources(key, value))
            else:
                explicit.append((key, value))
        seen: dict[str, Scalar] = {}
        pairs = []
        for key, value in explicit:
            first = seen.get(key.text)
            if first is not None:
                self.error((key.line, key.column),
                           f"duplicate key {key.text!r} (first at line {first.line}, column {first.column})",
                           hint="keep only one of them")
                continue
            seen[key.text] = key
            pairs.append((key, value))
        for key, value in merged:
            if key.text not in seen:
                seen[key.text] = key
                pairs.append((key, value))
        node.pairs = pairs

    def _merge_sources(self, key: Scalar, value) -> list:
        sources = value.items if isinstance(value, Seq) else [value]
        pairs = []
        for source in sources:
            if isinstance(source, Map):
                pairs.extend(source.pairs)
            else:
                self.error((source.line, source.column), "a `<<` merge takes a mapping or a list of mappings",
                           expected="a mapping", found=describe(source))
        return pairs
