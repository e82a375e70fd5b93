"""Errcode classification, masking and the 2048-byte splitting policy, without a server."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulecrm.channels import DELIVERED, PERMANENT, RETRYABLE
from rulecrm_wecom.protocol import as_list, classify, classify_http_status, split_text, utf8_len

MARKER = re.compile(r"\((\d+)/(\d+)\)\n")


def unmark(parts):
    """The parts' texts without their `(i/n)` markers, checking the markers count 1..n."""
    if len(parts) == 1:
        return parts
    bodies = []
    for index, part in enumerate(parts, 1):
        found = MARKER.match(part)
        assert found and (int(found[1]), int(found[2])) == (index, len(parts)), part[:12]
        bodies.append(part[found.end():])
    return bodies


@pytest.mark.parametrize(("errcode", "status", "code"), [
    (0, DELIVERED, None), (-1, RETRYABLE, "-1"), (45009, RETRYABLE, "45009"),
    (93000, PERMANENT, "93000"), (40058, PERMANENT, "40058"), (40001, PERMANENT, "40001"),
])
def test_errcodes_map_to_delivery(errcode, status, code):
    delivery = classify({"errcode": errcode, "errmsg": "m"})
    assert (delivery.status, delivery.code) == (status, code)


def test_rate_limit_asks_to_wait_a_minute():
    assert classify({"errcode": 45009, "errmsg": "api freq out of limit"}).retry_after == 60


@pytest.mark.parametrize(("status", "expected"), [(500, RETRYABLE), (503, RETRYABLE), (429, RETRYABLE),
                                                  (404, PERMANENT), (400, PERMANENT), (301, PERMANENT)])
def test_http_statuses(status, expected):
    assert classify_http_status(status).status == expected


def test_classify_masks_every_secret_in_the_errmsg():
    delivery = classify({"errcode": 40001, "errmsg": "key=abc token=x%79z"}, ["abc", "xyz", ""])
    assert delivery.detail == "key=[secret] token=[secret]"


def test_short_text_is_one_unmarked_part():
    assert split_text("你好", 2048) == ["你好"]
    exactly = "好" * 682 + "ab"  # 2048 bytes
    assert split_text(exactly, 2048) == [exactly]


def test_long_chinese_text_splits_into_marked_parts_within_the_limit():
    text = "小青柑普洱茶，回购提醒。" * 300  # 10,800 bytes
    parts = split_text(text, 2048)
    assert len(parts) == 6
    assert all(utf8_len(part) <= 2048 for part in parts)
    assert parts[0].startswith("(1/6)\n") and parts[-1].startswith("(6/6)\n")
    assert "".join(unmark(parts)) == text


def test_cuts_prefer_a_line_break():
    line = "尊敬的客户，您上次购买的小青柑快喝完了。\n"
    parts = split_text(line * 60, 2048)
    assert all(body.endswith("\n") for body in unmark(parts)[:-1])


def test_marker_digits_are_budgeted():
    text = "x" * 50_000  # 25 parts: markers grow to "(10/25)\n"
    parts = split_text(text, 2048)
    assert all(utf8_len(part) <= 2048 for part in parts)
    assert "".join(unmark(parts)) == text


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=3000), st.integers(min_value=16, max_value=600))
def test_splitting_loses_nothing_and_respects_the_limit(text, max_bytes):
    parts = split_text(text, max_bytes)
    assert all(utf8_len(part) <= max_bytes for part in parts)
    assert "".join(unmark(parts)) == text
    for part in parts:
        part.encode("utf-8")  # whole characters only


@pytest.mark.parametrize(("value", "expected"), [
    (None, []), ("alice, bob,", ["alice", "bob"]), (("alice", "@all"), ["alice", "@all"]), ("", []),
])
def test_mention_lists_accept_lists_and_comma_strings(value, expected):
    assert as_list(value) == expected
