"""What WeCom's answers mean for rulecrm: errcode classification (secrets masked), text splitting."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE, Delivery
from rulecrm.masking import mask_secrets

SYSTEM_BUSY = -1  # 系统繁忙: "retry later" in WeCom's global errcode table
FREQ_OUT_OF_LIMIT = 45009  # api freq out of limit (a robot's 20 messages/minute, or an API's quota)
RETRYABLE_ERRCODES = frozenset({SYSTEM_BUSY, FREQ_OUT_OF_LIMIT})
TOKEN_ERRCODES = frozenset({40014, 42001, 42009})  # invalid / expired access_token: fetch a new one once
RATE_WINDOW_SECONDS = 60.0


def classify(body: dict, secrets: Iterable[str] = ()) -> Delivery:
    """The Delivery an HTTP-200 JSON answer stands for: errcode 0, retryable errcodes, anything else."""
    errcode = body.get("errcode", 0)
    if errcode == 0:
        return Delivery(DELIVERED)
    detail = mask_secrets(str(body.get("errmsg") or f"errcode {errcode}"), secrets)
    if errcode in RETRYABLE_ERRCODES:
        retry_after = RATE_WINDOW_SECONDS if errcode == FREQ_OUT_OF_LIMIT else None
        return Delivery(RETRYABLE, code=str(errcode), detail=detail, retry_after=retry_after)
    return Delivery(PERMANENT, code=str(errcode), detail=detail)


def classify_http_status(status: int, reason: str = "") -> Delivery:
    """A non-200 HTTP answer: 5xx and 429 are worth retrying, any other status is final."""
    detail = f"HTTP {status} {reason}".strip()
    if status >= 500 or status == 429:
        return Delivery(RETRYABLE, code=str(status), detail=detail)
    return Delivery(PERMANENT, code=str(status), detail=detail)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def marker(index: int, total: int) -> str:
    """The header of part `index` of `total`; it counts toward the byte limit."""
    return f"({index}/{total})\n"


def split_text(text: str, max_bytes: int) -> list[str]:
    """`text` as messages of at most `max_bytes` UTF-8 bytes each, marked `(1/3)`... when split.

    Cuts fall between characters (never inside a multi-byte one), after a newline when one is in
    the second half of a part. Removing the markers and joining the parts gives back `text`.
    """
    if utf8_len(text) <= max_bytes:
        return [text]
    total = 2
    while True:
        bodies = _cut(text, [max_bytes - utf8_len(marker(i, total)) for i in range(1, total + 1)], max_bytes)
        if len(bodies) <= total:
            return [marker(i, len(bodies)) + body for i, body in enumerate(bodies, 1)]
        total = len(bodies)


def _cut(text: str, budgets: Sequence[int], max_bytes: int) -> list[str]:
    """Greedy cut of `text` into pieces fitting `budgets` (the last one repeated for extra pieces)."""
    pieces, start = [], 0
    while start < len(text):
        budget = budgets[min(len(pieces), len(budgets) - 1)]
        if budget < 4:  # room for any one character
            raise ValueError(f"max_bytes={max_bytes} leaves no room for text after the part marker")
        end, used = start, 0
        while end < len(text):
            size = utf8_len(text[end])
            if used + size > budget:
                break
            used += size
            end += 1
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline >= start + (end - start) // 2:
                end = newline + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def as_list(value) -> list[str]:
    """A setting given as a YAML list or a comma-separated string, as a list of non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value)
    return [str(item).strip() for item in items if str(item).strip()]
