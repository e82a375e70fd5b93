"""rulecrm.masking: secrets in every form a provider may echo them, phone numbers and e-mail addresses."""
from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.masking import MIN_PREFIX, mask_email, mask_personal, mask_secrets, secret_parts

SECRET = "Qz7Kx3Vb tok/en+ü=&9Wm4Rt"  # a space, URL-special characters and a non-ASCII one
HEAD, TAIL = "Qz7Kx3", "9Wm4Rt"


def lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


FORMS = {
    "raw": SECRET,
    "quote": quote(SECRET),
    "quote-all": quote(SECRET, safe=""),
    "quote_plus": quote_plus(SECRET),
    "lower-case escapes": lower_escapes(quote(SECRET, safe="")),
    "lower-case quote_plus": lower_escapes(quote_plus(SECRET)),
    "whitespace changed": SECRET.replace(" ", "\n\t  "),
    "whitespace removed": SECRET.replace(" ", ""),
    "whitespace added": " ".join(SECRET[i:i + 5] for i in range(0, len(SECRET), 5)),
    "json": json.dumps(SECRET)[1:-1],
    "json, whitespace changed": json.dumps(SECRET.replace(" ", "\n"))[1:-1],
    "json escaped slashes": json.dumps(SECRET)[1:-1].replace("/", "\\/"),
    "html": html.escape(SECRET),
    "mixed": "Qz7Kx3Vb%20tok%2Fen%2b%C3%BC=%269Wm4Rt",
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_every_echoed_form_of_a_secret_is_masked(form):
    masked = mask_secrets(f"HTTP 400: invalid signature {form} (see docs)", [SECRET])
    assert masked == "HTTP 400: invalid signature [secret] (see docs)"


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_secret_cut_short_at_the_end_of_a_text_is_masked(form):
    for size in range(len(form)):
        if len("".join(form[:size].split())) < MIN_PREFIX:
            continue
        for ending in ("", "...", "…"):
            masked = mask_secrets("error: " + form[:size] + ending, [SECRET])
            assert HEAD not in masked and masked.startswith("error: [secret]"), (size, masked)


def test_a_secret_cut_short_before_an_ellipsis_inside_a_text_is_masked():
    assert mask_secrets(f"key={HEAD}Vb..., hint: retry", [SECRET]) == "key=[secret], hint: retry"
    assert mask_secrets(f"a {quote(SECRET)[:12]}… b {HEAD}… c", [SECRET]) == "a [secret] b [secret] c"


def test_a_short_prefix_or_a_prefix_inside_the_text_is_left_alone():
    assert mask_secrets("x " + SECRET[: MIN_PREFIX - 1], [SECRET]) == "x " + SECRET[: MIN_PREFIX - 1]
    assert mask_secrets(f"{HEAD} then more", [SECRET]) == f"{HEAD} then more"


def test_masking_comes_before_cutting():
    text = "x" * 190 + SECRET + " and more"
    masked = mask_secrets(text, [SECRET], limit=200)
    assert len(masked) == 200 and masked.startswith("x" * 190 + "[secret]") and masked.endswith("…")
    assert HEAD[:3] not in masked


def test_several_secrets_and_empty_ones():
    assert mask_secrets("key=abc token=xyz", ["abc", "xyz", "", None]) == "key=[secret] token=[secret]"
    assert mask_secrets(None, ["abc"]) is None
    assert mask_secrets("nothing here", []) == "nothing here"


def test_secrets_that_hold_escapes_themselves():
    secret = "ab%41cd\\u0041&amp;"
    for form in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
        assert mask_secrets(f"<{form}>", [secret]) == "<[secret]>", form


def test_the_parts_of_a_url_secret():
    url = "https://hooks.example.com/services/T0AB12CD/B0XY34ZW/abcdEFGHijklMNOPqrst?token=tk9f&format=json#frag-1"
    parts = secret_parts(url)
    assert parts[0] == url
    assert set(parts[1:]) == {"T0AB12CD", "B0XY34ZW", "abcdEFGHijklMNOPqrst", "tk9f", "frag-1"}
    masked = mask_secrets("404 no route /services/T0AB12CD/B0XY34ZW/abcdEFGHijklMNOPqrst?token=tk9f&format=json", [url])
    assert masked == "404 no route /services/[secret]/[secret]/[secret]?token=[secret]&format=json"
    assert secret_parts("https://bob:pa55-w0rd@example.com/hook")[1:] == ["bob", "pa55-w0rd"]
    assert secret_parts("not a url") == ["not a url"]
    assert secret_parts("http://[::1/broken") == ["http://[::1/broken"]


def test_a_url_secret_echoed_encoded_is_masked():
    url = "https://example.com/hook/abcdEFGHijklMNOPqrst?sig=s1g-n4ture"
    assert mask_secrets(f"unknown url {quote(url, safe='')}", [url]) == "unknown url [secret]"


def test_hostile_texts_are_masked_in_linear_time():
    import time

    for text in ("%41" * 100_000, "&#" * 100_000, "\\u" * 100_000, HEAD * 30_000, " " * 300_000):
        started = time.perf_counter()
        mask_secrets(text, [SECRET, "https://h.example/a?token=abcdefgh"])
        mask_personal(text)
        assert time.perf_counter() - started < 1.0


_secrets = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: len(s.replace("+", "").split()) > 0)
_forms = st.sampled_from([
    lambda s: s, lambda s: quote(s, safe=""), quote, quote_plus, lambda s: lower_escapes(quote_plus(s)),
    lambda s: json.dumps(s), lambda s: json.dumps(s, ensure_ascii=False), lambda s: " ".join(s.split()),
    lambda s: "".join(s.split()), html.escape,
])


@settings(max_examples=300, deadline=None)
@given(secret=_secrets, form=_forms, before=st.text(max_size=20), after=st.text(max_size=20))
def test_no_echoed_form_survives(secret, form, before, after):
    echoed = form(secret)
    masked = mask_secrets(before + echoed + after, [secret])
    assert echoed not in masked or echoed in "[secret]"
    assert secret not in masked or secret in "[secret]"


# -- personal data -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("data.phone: expected a string, found 8613800000000 (number)",
     "data.phone: expected a string, found ***0000 (number)"),
    ("found '+8613800000000' (string)", "found '+***0000' (string)"),
    ("'+86 138 0000 0000'", "'+***0000'"),
    ("call 138-0000-1234 now", "call ***1234 now"),
    ("+1 (415) 555-0100", "+***0100"),
    ("电话13800000000", "电话***0000"),
    ("mail li.ming+tea@example.com.cn ok", "mail l***@example.com.cn ok"),
    ("'verylongaddressname@exam...' (string)", "'v***@exam...' (string)"),
    # not phone numbers: dates, times, decimals, addresses, ids and short numbers stay readable
    ("at: 2026-03-01T10:15:00+08:00", "at: 2026-03-01T10:15:00+08:00"),
    ("2026-03-01 10:15", "2026-03-01 10:15"),
    ("20260301T101500", "20260301T101500"),
    ("0.1234567890 and 12345678.5", "0.1234567890 and 12345678.5"),
    ("ip 192.168.100.200", "ip 192.168.100.200"),
    ("order-12345678, 1048576 bytes, rating 1234567", "order-12345678, 1048576 bytes, rating 1234567"),
])
def test_phone_numbers_and_emails_are_masked(text, expected):
    assert mask_personal(text) == expected


def test_mask_email_keeps_the_first_letter_and_the_domain():
    assert mask_email("gone@example.com") == "g***@example.com"
    assert mask_personal(None) is None


def test_a_raw_secret_read_as_half_of_an_escape_is_masked_too():
    # `\` then the JSON form of `\`: the first backslash reads as the escape `\"` of the quote after it
    masked = mask_secrets("\\" + json.dumps("\\"), ["\\"])
    assert "\\" not in masked and masked.startswith("[secret]")
