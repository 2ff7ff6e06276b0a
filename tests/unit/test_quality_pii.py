"""PII detectors: each type found exactly, and the look-alikes that must not be."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.pii import (
    ADDRESS,
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PERSON,
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


def test_scan_rows_covers_every_field_with_its_path():
    # Personal data outside the trained text: a row-level field kept in meta, nested objects, lists,
    # a number, and a field name that is the only context ("password").
    rows = [
        {"messages": [{"role": "user", "content": "Reset my password please"},
                      {"role": "assistant", "content": "Done."}],
         "meta": {"user_email": "jane.doe@example.com", "contact": {"phone": "+1 415 555 0134"},
                  "notes": ["ssn 123-45-6789"], "password": "hunter22", "count": 3}},
        {"prompt": "hi", "completion": "hello", "meta": {"user_email": "bob@corp.example"}},
    ]
    report = scan_rows(rows, [4, 9])
    assert dict(report.counts) == {EMAIL: 2, PHONE: 1, SSN: 1, SECRET: 1}
    assert report.rows == {0: [EMAIL, PHONE, SECRET, SSN], 1: [EMAIL]}
    assert report.row_fields == {0: ["meta.user_email", "meta.contact.phone", "meta.notes[0]", "meta.password"],
                                 1: ["meta.user_email"]}
    assert [(f.line, f.field, f.masked) for f in report.examples[EMAIL]] == [
        (4, "meta.user_email", "j***@e***.com"), (9, "meta.user_email", "b***@c***.example")]
    assert {k: dict(v) for k, v in report.by_field.items()} == {
        "meta.user_email": {EMAIL: 2}, "meta.contact.phone": {PHONE: 1}, "meta.notes[]": {SSN: 1},
        "meta.password": {SECRET: 1}}
    assert report.fields_scanned["messages[].content"] == 1 and report.fields_scanned["meta.user_email"] == 2
    assert report.fields_scanned["completion"] == 1 and report.fields_scanned["meta.count"] == 1


def test_redact_row_redacts_every_field():
    row = {"messages": [{"role": "user", "content": "my ssn is 123-45-6789"},
                        {"role": "assistant", "content": [{"type": "text", "text": "mail a@b.io"}]}],
           "meta": {"id": "123-45-6789", "user": {"emails": ["x@example.org", "none"]}, "card": 4111111111111111,
                    "n": 12}}
    new, n = redact_row(row)
    assert n == 5
    assert new["messages"][0] == {"role": "user", "content": "my ssn is <SSN>"}
    assert new["messages"][1]["content"] == [{"type": "text", "text": "mail <EMAIL>"}]
    assert new["meta"] == {"id": "<SSN>", "user": {"emails": ["<EMAIL>", "none"]}, "card": "<CREDIT_CARD>", "n": 12}
    assert row["messages"][0]["content"] == "my ssn is 123-45-6789"  # input untouched
    assert row["meta"]["card"] == 4111111111111111


# --- issue 13: missing types and false positives ---------------------------------------------------

ISSUE_13_FOUND = [
    ("My SSN is 123456789, thanks", SSN, "123456789"),
    ("social security number: 219 09 9999", SSN, "219 09 9999"),
    ("call me at 4155550134 after six", PHONE, "4155550134"),
    ("Please forward this to John Smith before Friday.", PERSON, "John Smith"),
    ("Ask Mr. Okafor about the invoice.", PERSON, "Mr. Okafor"),
    ("Bill Anderson approved it.", PERSON, "Bill Anderson"),
    ("Ship it to 123 Main Street, Springfield, IL 62704.", ADDRESS, "123 Main Street, Springfield, IL 62704"),
    ("Mail the form to P.O. Box 1234 today", ADDRESS, "P.O. Box 1234"),
    ("diners 30569309025904 on file", CREDIT_CARD, "30569309025904"),
]


@pytest.mark.parametrize(("text", "kind", "found"), ISSUE_13_FOUND)
def test_new_types_are_found(text, kind, found):
    start = text.index(found)
    assert find_pii(text) == [PiiMatch(kind, start, start + len(found), found)]


ISSUE_13_NOT_FOUND = [
    "version 1.2.3.4 released",  # a version, not an IP address
    "upgrade to v1.2.3.4 now",
    "pip install numpy==1.2.3.4",
    "created 20231105123043 by cron",  # a 14-digit timestamp that passes Luhn, not a card
    "order 123456789 shipped",  # nine digits without "SSN" before them
    "Your order 4155550134 has shipped.",  # ten digits named as an id
    "event at 1699180245",  # a Unix timestamp is no NANP number
    "The Grace Period ends on Monday; visit Virginia Beach.",
    "Top 10 Ways to save; the 9 Supreme Court justices agreed.",
]


@pytest.mark.parametrize("text", ISSUE_13_NOT_FOUND)
def test_issue_13_look_alikes_are_not_flagged(text):
    assert find_pii(text) == []


def test_field_name_is_context_for_bare_numbers():
    report = scan_rows([{"text": "hi", "meta": {"ssn": "123456789", "phone": 4155550134, "id": 4155550134}}])
    assert {k: dict(v) for k, v in report.by_field.items()} == {"meta.ssn": {SSN: 1}, "meta.phone": {PHONE: 1}}


def _scores(path: Path) -> dict[str, tuple[float, float]]:
    """Per-type (precision, recall) on a labelled JSONL file: a finding counts when it overlaps a
    labelled span of its type."""
    tally: dict[str, list[int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row["text"]
        gold = [(s["type"], text.index(s["text"]), text.index(s["text"]) + len(s["text"])) for s in row["pii"]]
        found = find_pii(text)
        for m in found:
            hit = any(t == m.type and m.start < e and s < m.end for t, s, e in gold)
            tally.setdefault(m.type, [0, 0, 0])[0 if hit else 1] += 1
        for t, s, e in gold:
            if not any(t == m.type and m.start < e and s < m.end for m in found):
                tally.setdefault(t, [0, 0, 0])[2] += 1
    return {t: (tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 1.0)
            for t, (tp, fp, fn) in tally.items()}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_labelled_set_precision_and_recall_per_type():
    # 149 lines written before the new detectors: positives and look-alikes per type (see the report
    # of issue 13 for the table). Floors sit just under what is measured.
    scores = _scores(FIXTURES / "pii_labelled.jsonl")
    assert set(scores) == {EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SSN, SECRET, PERSON, ADDRESS}
    for kind, (precision, recall) in scores.items():
        floor = 0.9 if kind in (PERSON, ADDRESS) else 1.0
        assert precision >= floor and recall >= floor, (kind, precision, recall)


def test_held_out_set_precision_and_recall_per_type():
    # 45 lines written after the detectors, measured once before two fixes (initials in street names,
    # "Via Roma 10" order): names 0.79/0.92 then, addresses 1.0/0.75.
    scores = _scores(FIXTURES / "pii_heldout.jsonl")
    for kind, (precision, recall) in scores.items():
        floor = 0.8 if kind == PERSON else 1.0
        assert precision >= floor and recall >= 0.9, (kind, precision, recall)
