"""Where each character of a YAML scalar's value was written in the file.

YAML unquotes, unescapes and folds a scalar before we see its value, so an offset in the value is
not an offset in the file: `"say \\"hi\\" {x}"` has two escapes before the brace, a folded line
joins two lines with one space. `locator` walks the value and the source side by side, undoing
each of those steps, and gives up (returns None) as soon as they disagree, so a position it gives
is always the exact character.
"""
from __future__ import annotations

from collections.abc import Callable

from rulecrm.rulefile.yamlpos import Scalar

_BLANKS = " \t"
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0",
    "L": "\u2028", "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}

Locate = Callable[[int], "tuple[int, int]"]


def locator(node: Scalar, lines: list[str]) -> Locate | None:
    """A function from an offset in `node.text` to its 1-based (line, column) in the file, or None
    when the scalar's source cannot be matched character by character (then positions are estimates)."""
    start = _start(node, lines)
    if start is None:
        return None
    if _written_as_is(node, lines, start):
        return _columns_from(start, len(node.text))
    positions = None
    for indent in _indents(node, lines, start):
        try:
            positions = _align(node, lines, (start[0], indent))
        except IndexError:  # the source ran out before the value did: not this reading
            positions = None
        if positions is not None:
            break
    if positions is None:
        return None

    def locate(offset: int) -> tuple[int, int]:
        if 0 <= offset < len(positions):
            return positions[offset]
        if positions:  # the end of the value: just after its last character
            line, column = positions[-1]
            return line, column + 1
        return start[0] + 1, start[1] + 1

    return locate


def one_line_start(node: Scalar, lines: list[str]) -> tuple[int, int] | None:
    """The 1-based (line, column) of a value written on one line as it is (no escape, no fold), whose
    characters are therefore consecutive columns; None for any other scalar."""
    start = _start(node, lines)
    if start is None or not _written_as_is(node, lines, start):
        return None
    return start[0] + 1, start[1] + 1


def _written_as_is(node: Scalar, lines: list[str], start) -> bool:
    """The common case: a value on one line, character for character as in the source (no escape,
    no doubled quote, no trailing blank), so its characters are consecutive columns."""
    text, style = node.text, node.style
    if style not in (None, "'", '"') or not text or "\n" in text or text[-1] in _BLANKS:
        return False
    line, column = start
    if not lines[line].startswith(text, column):
        return False
    return not (style == '"' and "\\" in text) and not (style == "'" and "'" in text)


def _columns_from(start, length: int) -> Locate:
    line, column = start[0] + 1, start[1] + 1

    def locate(offset: int) -> tuple[int, int]:
        # as `locator` does with the positions of each character: past either end is just after the last
        return (line, column + offset) if 0 <= offset < length else (line, column + length)

    return locate


def _start(node: Scalar, lines: list[str]):
    """(line index, column index) of the value's first character in the source; for a block
    scalar, the line after its header and the indentation of its first non-empty line."""
    line, column = node.line - 1, node.column - 1
    if line >= len(lines):
        return None
    if node.style in ("'", '"'):
        return line, column + 1
    if node.style is None:
        return line, column
    for index in range(line + 1, len(lines)):
        if lines[index].strip(" "):  # the first non-empty line sets the indentation of them all
            return line + 1, len(lines[index]) - len(lines[index].lstrip(" "))
    return line + 1, 0


def _indents(node: Scalar, lines: list[str], start):
    """The block indentation to try: the detected one, or, after an explicit indentation indicator
    (`|2`, counted from the parent's indentation, which we do not know), every one that could be."""
    yield start[1]
    if node.style in ("|", ">"):
        header = lines[node.line - 1][node.column:].split("#", 1)[0]
        if any(char.isdigit() for char in header):
            yield from (indent for indent in range(node.column + 10) if indent != start[1])


def _align(node: Scalar, lines: list[str], start) -> list[tuple[int, int]] | None:
    style = node.style
    block = style in ("|", ">")
    li, ci = start
    indent = ci if block else 0
    if block:
        ci = min(indent, len(lines[li])) if li < len(lines) else 0
    text = node.text
    out: list[tuple[int, int]] = []
    k = 0
    while k < len(text):
        char = text[k]
        line = lines[li]
        at_end = ci >= len(line) if block else not line[ci:].strip(_BLANKS)
        if at_end:
            if char not in " \n":
                return None
            out.append((li + 1, ci + 1))
            left_blank = not (line[indent:] if block else line).strip(_BLANKS)
            li, ci = _next_line(lines, li, indent, block)
            if (char == "\n" and style != "|" and not left_blank and li < len(lines)
                    and not lines[li].strip(_BLANKS) and not _kept_break(lines, li - 1, indent, style)):
                li, ci = _next_line(lines, li, indent, block)  # a folded break is dropped before empty lines
            k += 1
            continue
        if style == '"' and line[ci] == "\\":
            if ci == len(line) - 1:  # an escaped line break joins the lines with nothing between
                li, ci = _next_line(lines, li, indent, block)
                continue
            decoded, length = _escape(line, ci)
            if decoded != char:
                return None
            out.append((li + 1, ci + 1))
            ci += length
            k += 1
            continue
        if style == "'" and char == "'":
            if not line.startswith("''", ci):
                return None
            out.append((li + 1, ci + 1))
            ci += 2
            k += 1
            continue
        if line[ci] != char:
            return None
        out.append((li + 1, ci + 1))
        ci += 1
        k += 1
    return out


def _kept_break(lines: list[str], li: int, indent: int, style) -> bool:
    """In a folded block, the line break next to a more-indented line is kept, not folded."""
    if style != ">":
        return False
    following = next((line for line in lines[li + 1:] if line.strip(_BLANKS)), "")
    return any(line[indent:indent + 1] in (" ", "\t") for line in (lines[li], following))


def _next_line(lines: list[str], li: int, indent: int, block: bool) -> tuple[int, int]:
    li += 1
    if li >= len(lines):
        return li, 0
    line = lines[li]
    if block:
        return li, min(indent, len(line))
    return li, len(line) - len(line.lstrip(_BLANKS))


def _escape(line: str, ci: int) -> tuple[str | None, int]:
    """The character a double-quoted escape at `ci` stands for, and how many source characters it takes."""
    code = line[ci + 1]
    if code in _ESCAPES:
        return _ESCAPES[code], 2
    digits = _HEX_ESCAPES.get(code)
    if digits is None:
        return None, 2
    try:
        return chr(int(line[ci + 2:ci + 2 + digits], 16)), 2 + digits
    except ValueError:
        return None, 2
