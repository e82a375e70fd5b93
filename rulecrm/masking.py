"""Masking of text that may be stored, logged or printed: channel secrets in any echoed form, phones, e-mails."""
from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import islice
from urllib.parse import unquote, urlsplit

SECRET_MARK = "[secret]"
MIN_PREFIX = 6  # a secret's first characters at the end of a text cut short are masked from this length on
ELLIPSIS = "…"

# Escapes a provider may wrap an echoed secret in: percent (either hex case), JSON and HTML.
_FAMILIES = {
    "percent": r"(?:%[0-9A-Fa-f]{2})+",
    "json": r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9A-Fa-f]{4}|\\[/\"\\bfnrt]",
    "html": r"&(?:amp|quot|lt|gt|#[0-9]+|#[xX][0-9A-Fa-f]+);",
}
_SUBSETS = [frozenset(n for i, n in enumerate(_FAMILIES) if mask >> i & 1) for mask in range(2 ** len(_FAMILIES))]
_ESCAPES = {subset: re.compile("|".join(_FAMILIES[n] for n in _FAMILIES if n in subset) or r"(?!)")
            for subset in _SUBSETS}
_ALL = _SUBSETS[-1]
_JSON_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_CREDENTIAL_NAME = re.compile(r"key|token|secret|sig|auth|pass|pwd|code|session|cred", re.IGNORECASE)
_ENTITIES = {"&amp;": "&", "&quot;": '"', "&lt;": "<", "&gt;": ">"}
_ELLIPSES = re.compile(r"\.{3,}|…")
MAX_CUTS = 64  # ellipses inside a text looked at for a secret cut short before them
_PARTIAL_ESCAPES = (
    re.compile(r"(?:%[0-9A-Fa-f]{2})*(?:%[0-9A-Fa-f]?|\\(?:u[0-9A-Fa-f]{0,3})?|&#?[0-9A-Za-z]{0,8})\Z"),
    re.compile(r"(?:%[0-9A-Fa-f]{2})+\Z"),
)


def mask_secrets(text: str | None, secrets: Iterable[str | None], *, limit: int | None = None) -> str | None:
    """`text` with every form of every secret replaced by `[secret]`, then cut to `limit` characters.

    Found in any mix of raw characters and percent (`quote`, `quote_plus`, either hex case), JSON
    (`\\u00e9`, `\\/`, `\\n`) or HTML (`&amp;`) escapes, with whitespace (and `+`) added, removed or
    changed anywhere; a secret's first `MIN_PREFIX`+ characters ending the text or followed by
    `...`/`…` are taken as the secret cut short. A URL secret also masks its parts (`secret_parts`).
    Masking comes before cutting, so the cut cannot leave a piece of a secret behind.
    """
    if text is None:
        return None
    text = str(text)
    patterns = set()
    parts = set()
    for secret in secrets:
        for part in secret_parts(secret):
            parts.add(part)
            # The secret may hold escapes itself and be wrapped in one layer of another kind, so
            # each choice of which of its own escapes to read gives a form to look for.
            patterns.update(p for p in (_canonical(part, subset)[0] for subset in _SUBSETS) if p)
    if patterns:
        text = _mask_patterns(text, patterns)
        for part in parts:
            # reading escapes can take a raw secret for half of one (a `\` before a `"`): mask it as written
            if part in text and part not in SECRET_MARK:
                text = text.replace(part, SECRET_MARK)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return text


def secret_parts(secret: str | None) -> list[str]:
    """A secret and, when it is a URL, the parts of it that are secret on their own.

    Of a URL (`scheme://...`): the user name and password; each query value that looks like a
    credential (`looks_secret`) or, from 4 characters on, whose name says it is one (`key`,
    `token`, `sig`, `auth`, ...); the fragment; each path segment that looks like a credential.
    Host, port, plain path words (`/api/hooks/`) and plain values (`format=json`) stay readable.
    """
    if not secret:
        return []
    parts = [secret]
    text = secret.strip()
    if "://" not in text:
        return parts
    try:
        url = urlsplit(text)
        candidates = [url.username, url.password]
    except ValueError:
        return parts
    for pair in url.query.split("&"):
        name, _, value = pair.partition("=")
        value = unquote(value.replace("+", " "))
        if looks_secret(value) or (len(value) >= 4 and _CREDENTIAL_NAME.search(name)):
            candidates.append(value)
    if len(url.fragment) >= 4:
        candidates.append(unquote(url.fragment))
    candidates.extend(segment for segment in (unquote(s) for s in url.path.split("/")) if looks_secret(segment))
    parts.extend(c for c in candidates if c and c not in parts)
    return parts


def looks_secret(word: str) -> bool:
    """A URL part that is a credential rather than a name: 16+ characters, or 8+ mixing letters and digits."""
    if len(word) >= 16:
        return True
    return len(word) >= 8 and any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


def _ignorable(char: str) -> bool:
    """Characters a provider may add, drop or swap (`quote_plus` turns spaces into `+`)."""
    return char.isspace() or char == "+"


def _canonical(text: str, families: frozenset = _ALL) -> tuple[str, list[tuple[int, int]]]:
    """`text` with the escapes of `families` decoded and ignorable characters dropped, and for each
    character kept its span in `text`."""
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _ESCAPES[families].finditer(text):
        _plain(text, position, match.start(), chars, spans)
        for char, start, end in _decode(match.group(), match.start()):
            if not _ignorable(char):
                chars.append(char)
                spans.append((start, end))
        position = match.end()
    _plain(text, position, len(text), chars, spans)
    return "".join(chars), spans


def _plain(text, start, end, chars, spans) -> None:
    for index in range(start, end):
        if not _ignorable(text[index]):
            chars.append(text[index])
            spans.append((index, index + 1))


def _decode(escape: str, offset: int) -> list[tuple[str, int, int]]:
    """(character, start, end) for one escape match; bytes that are not UTF-8 stay as written."""
    if escape.startswith("%"):
        data = bytes.fromhex(escape.replace("%", ""))
        decoded, index = [], 0
        while index < len(data):
            for size in (1, 2, 3, 4):
                try:
                    char = data[index : index + size].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                decoded.append((char, offset + 3 * index, offset + 3 * (index + size)))
                index += size
                break
            else:
                start = offset + 3 * index
                decoded.extend((c, start + i, start + i + 1) for i, c in enumerate(escape[3 * index : 3 * index + 3]))
                index += 1
        return decoded
    end = offset + len(escape)
    if escape.startswith("\\u") and len(escape) == 12:  # a surrogate pair: one character
        high, low = int(escape[2:6], 16), int(escape[8:], 16)
        return [(chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)), offset, end)]
    if escape.startswith("\\u"):
        return [(chr(int(escape[2:], 16)), offset, end)]
    if escape.startswith("\\"):
        return [(_JSON_ESCAPES.get(escape[1], escape[1]), offset, end)]
    if escape in _ENTITIES:
        return [(_ENTITIES[escape], offset, end)]
    number = escape[2:-1]
    code = int(number[1:], 16) if number[:1] in "xX" else int(number)
    if code > 0x10FFFF:  # not a character: kept as written, one character each
        return [(c, offset + i, offset + i + 1) for i, c in enumerate(escape)]
    return [(chr(code), offset, end)]


def _mask_patterns(text: str, patterns: set[str]) -> str:
    canonical, spans = _canonical(text)
    ranges: list[tuple[int, int]] = []
    for pattern in patterns:
        start = canonical.find(pattern)
        while start != -1:
            ranges.append((spans[start][0], spans[start + len(pattern) - 1][1]))
            start = canonical.find(pattern, start + 1)
    ends = [span[1] for span in spans]
    for cut, debris_end in _cut_points(text):
        end = bisect_right(ends, cut)  # canonical characters before the cut
        for pattern in patterns:
            # the longest proper prefix of the secret (of MIN_PREFIX+ characters) ending at the cut
            head = pattern[:MIN_PREFIX]
            start = canonical.find(head, max(0, end - len(pattern) + 1), end)
            while start != -1:
                if pattern.startswith(canonical[start:end]):
                    ranges.append((spans[start][0], debris_end))  # with the cut's debris
                    break
                start = canonical.find(head, start + 1, end)
    if not ranges:
        return text
    ranges.sort()
    merged = [list(ranges[0])]
    for start, stop in ranges[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    for start, stop in reversed(merged):
        text = text[:start] + SECRET_MARK + text[stop:]
    return text


def _cut_points(text: str) -> set[tuple[int, int]]:
    """(cut, end of its debris): where a text may have cut a secret short — its end, and before each
    `...`/`…` — each also before an escape the cut left incomplete (`%C`, `%C3` of a two-byte
    character, `\\u00`, `&am`) and before a trailing `...`."""
    ends = [(len(text), len(text))]
    ends += [(m.start(), m.end()) for m in islice(_ELLIPSES.finditer(text), MAX_CUTS)]
    points = set()
    for end, debris_end in ends:
        rest = text[:end].rstrip()
        for mark in ("...", ELLIPSIS):
            if rest.endswith(mark):
                rest = rest[: -len(mark)]
                break
        points.update({(end, debris_end), (len(rest), debris_end)})
        for partial in _PARTIAL_ESCAPES:
            match = partial.search(rest, max(0, len(rest) - 16))  # one cut character's escapes at most
            if match:
                points.add((match.start(), debris_end))
    return points


# -- personal data ------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![\w.%+-])([\w.%+-]+)@((?:[\w-]+\.)*[\w-]+)")
# A phone number: an optional `+`, digit groups joined by one space or dash, area codes in parentheses
# allowed. Not part of a longer word, number, date or time (no letter, digit, `.` or `:` next to it).
_PHONE = re.compile(r"(?<![A-Za-z0-9_+.\-])(?<![0-9][ \-])\+?(?:\([0-9]{1,5}\)[ \-]?)?[0-9]+"
                    r"(?:(?:[ \-]|[ \-]?\([0-9]{1,5}\)[ \-]?)[0-9]+)*(?![A-Za-z0-9_:]|[.\-][0-9])")


def mask_email(address: str) -> str:
    """`s***@example.com`: enough to recognise an address in a log, not to harvest it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_personal(text: str | None) -> str | None:
    """`text` with e-mail addresses (`s***@example.com`) and phone numbers (`+***0000`) masked.

    A phone number is 8 to 15 digits: with a leading `+`, as one run of digits, or (from 10 digits
    on) in groups split by spaces, dashes or parentheses; it keeps its `+` and last 4 digits. Dates,
    times, decimals and shorter numbers are left alone.
    """
    if text is None:
        return None
    text = _EMAIL.sub(lambda m: mask_email(m.group()), str(text))
    return _PHONE.sub(_phone, text)


def _phone(match: re.Match) -> str:
    number = match.group()
    digits = [c for c in number if c.isdigit()]
    grouped = any(not c.isdigit() for c in number.lstrip("+"))
    if not 8 <= len(digits) <= 15 or (grouped and not number.startswith("+") and len(digits) < 10):
        return number
    return ("+" if number.startswith("+") else "") + "***" + "".join(digits[-4:])
