"""PII detectors: each type found exactly, and the look-alikes that must not be."""
from __future__ import annotations

import pytest

from tuneforge.data.pii import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    SECRET,
    SSN,
    PiiMatch,
    find_pii,
    iban_valid,
    luhn_valid,
    mask_example,
    redact,
    redact_row,
    scan_rows,
)

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"  # 36 chars after the prefix

POSITIVES = [
    ("write to john.doe+ml@example.co.uk today", EMAIL, "john.doe+ml@example.co.uk"),
    ("call +44 20 7946 0958 now", PHONE, "+44 20 7946 0958"),
    ("call +1-415-555-0134 now", PHONE, "+1-415-555-0134"),
    ("office (415) 555-0134 today", PHONE, "(415) 555-0134"),
    ("office 415.555.0134 today", PHONE, "415.555.0134"),
    ("mobile 06 12 34 56 78 in Paris", PHONE, "06 12 34 56 78"),
    ("London 020 7946 0958 office", PHONE, "020 7946 0958"),
    ("visa 4111 1111 1111 1111 exp", CREDIT_CARD, "4111 1111 1111 1111"),
    ("mc 5555-5555-5555-4444 exp", CREDIT_CARD, "5555-5555-5555-4444"),
    ("amex 378282246310005 exp", CREDIT_CARD, "378282246310005"),
    ("pay DE89 3704 0044 0532 0130 00 now", IBAN, "DE89 3704 0044 0532 0130 00"),
    ("pay GB82WEST12345698765432 now", IBAN, "GB82WEST12345698765432"),
    ("host 192.168.1.254 is up", IP_ADDRESS, "192.168.1.254"),
    ("host 2001:db8::8a2e:370:7334 is up", IP_ADDRESS, "2001:db8::8a2e:370:7334"),
    ("link fe80::1 is up", IP_ADDRESS, "fe80::1"),
    ("ssn 123-45-6789 on file", SSN, "123-45-6789"),
    ("aws AKIAIOSFODNN7EXAMPLE key", SECRET, "AKIAIOSFODNN7EXAMPLE"),
    (f"token {GITHUB_TOKEN} here", SECRET, GITHUB_TOKEN),
    ("key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t done", SECRET, "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"),
    ("slack xoxb-123456789012-abcdefABCDEF done", SECRET, "xoxb-123456789012-abcdefABCDEF"),
    ("password=hunter22 here", SECRET, "hunter22"),
    ('config api_key: "q8Zr4kP0xY" end', SECRET, "q8Zr4kP0xY"),
    ('{"client_secret": "s3cr3t-v4lue"}', SECRET, "s3cr3t-v4lue"),
]


@pytest.mark.parametrize(("text", "kind", "found"), POSITIVES)
def test_each_type_is_found_exactly(text, kind, found):
    start = text.index(found)
    assert find_pii(text) == [PiiMatch(kind, start, start + len(found), found)]


def test_pem_private_key_block_is_one_secret():
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    text = f"key:\n{pem}\nbye"
    assert find_pii(text) == [PiiMatch(SECRET, 5, 5 + len(pem), pem)]


NEGATIVES = [
    "visa 4111 1111 1111 1112 exp",  # Luhn fails
    "id 1234567890123 in the ledger",  # Luhn fails, starts with 1
    "pay DE89 3704 0044 0532 0130 01 now",  # IBAN checksum wrong (and the tail is not a phone)
    "pay DE89 3704 0044 0532 0130 now",  # IBAN too short for Germany
    "addr 999.1.1.1 is not an address",
    "addr 256.256.256.256 nor this",
    "version 1.2.3.4.5 released",
    "at 12:30:45 we met; std::vector is code",
    "in 2024 and 1999 things happened",
    "order id 1234567890 shipped",
    "born 2024-01-15 or 15.01.2024",
    "ssn 666-12-3456 900-12-3456 123-00-4567 123-45-0000 000-12-3456",
    "password=None and password=<your-password> and api_key=${API_KEY}",
    "the keyboard and the monkey sat together through the night",
    "user: hello\nassistant: hi there: how are you",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_near_misses_are_not_flagged(text):
    assert find_pii(text) == []


def test_validators():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # one character short of 22


def test_overlapping_matches_keep_the_longest_specific_one():
    # The card's digit groups would also satisfy the loose phone pattern; only the card remains.
    assert [m.type for m in find_pii("card: 4111 1111 1111 1111.")] == [CREDIT_CARD]
    # An email inside a password assignment: the secret assignment value wins (it is longer).
    assert [m.type for m in find_pii("password=bob.smith@corp.example")] == [SECRET]


def test_redact_uses_typed_placeholders():
    text = "Mail a.b@example.com, call +44 20 7946 0958, card 4111-1111-1111-1111, password=hunter22"
    new, matches = redact(text)
    assert new == "Mail <EMAIL>, call <PHONE>, card <CREDIT_CARD>, password=<SECRET>"
    assert [m.type for m in matches] == [EMAIL, PHONE, CREDIT_CARD, SECRET]


def test_redact_restricted_to_types():
    new, _ = redact("a.b@example.com 123-45-6789", types=[SSN])
    assert new == "a.b@example.com <SSN>"
    with pytest.raises(ValueError, match="unknown PII types"):
        find_pii("x", types=["NAME"])


def test_mask_example():
    assert mask_example("john.doe@example.com") == "j***@e***.com"
    assert mask_example("4111 1111 1111 1111", CREDIT_CARD) == "**** **** **** 1111"
    assert mask_example("123-45-6789", SSN) == "***-**-6789"
    assert mask_example("AKIAIOSFODNN7EXAMPLE", SECRET) == "AKIA***"
    assert mask_example(GITHUB_TOKEN, SECRET) == "ghp_***"
    assert mask_example("10.0.0.1", IP_ADDRESS) == "**.*.*.*"  # too short to reveal a tail
    assert mask_example("192.168.1.254", IP_ADDRESS) == "***.***.1.254"  # last four characters, as for cards
    assert mask_example("sk-proj-Ab3dEf6hIj9kLm2nOp5q", SECRET) == "sk-***"


def test_scan_rows_counts_examples_and_lines():
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "mail me: x.y@example.org"},
                      {"role": "assistant", "content": "ok, and call 415-555-0134"}]},
        {"prompt": "card 4111 1111 1111 1111", "completion": "and z@example.net"},
    ]
    report = scan_rows(rows, [3, 8, 12], max_examples=1)
    assert report.rows_scanned == 3 and report.rows_with_pii == 2
    assert dict(report.counts) == {EMAIL: 2, PHONE: 1, CREDIT_CARD: 1}
    assert report.rows == {1: [EMAIL, PHONE], 2: [CREDIT_CARD, EMAIL]}
    assert [(f.index, f.line, f.masked) for f in report.examples[EMAIL]] == [(1, 8, "x***@e***.org")]
    assert [(f.index, f.line) for f in report.examples[CREDIT_CARD]] == [(2, 12)]


def test_redact_row_touches_only_text():
    row = {"messages": [{"role": "user", "content": "my ssn is 123-45-6789"},
                        {"role": "assistant", "content": [{"type": "text", "text": "mail a@b.io"}]}],
           "meta": {"id": "123-45-6789"}}
    new, n = redact_row(row)
    assert n == 2
    assert new["messages"][0] == {"role": "user", "content": "my ssn is <SSN>"}
    assert new["messages"][1]["content"] == [{"type": "text", "text": "mail <EMAIL>"}]
    assert new["meta"] == {"id": "123-45-6789"}  # metadata is not training text
    assert row["messages"][0]["content"] == "my ssn is 123-45-6789"  # input untouched
