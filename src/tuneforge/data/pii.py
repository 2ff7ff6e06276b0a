"""Personal data and secrets in training text: detection, redaction, masked examples for reports.

Covered: email, phone numbers (incl. bare 10-digit North American numbers not named as an id),
credit cards (Luhn + issuer prefix and length), IBAN (mod-97), IPv4/IPv6 (not dotted versions such as
"v1.2.3.4"), US SSN (dashed; undashed only after "SSN"/"social security"), person names and postal
addresses (gazetteer and pattern based, see `pii_people`), and secrets (AWS access key ids, GitHub
tokens, OpenAI-style keys, Slack tokens, PEM private keys, generic `password=` / `api_key=` values).

Names and addresses without a trained NER model (presidio needs spaCy models from a hub, which cannot be
fetched here) are gazetteer/pattern detectors: measured per type on tests/fixtures/pii_labelled.jsonl
and pii_heldout.jsonl (tests/unit/test_quality_pii.py holds the floors).

Scope: every string (and integer) value of a row, nested, `meta` included - a row-level "user_email"
is as personal as one typed in a message. Reports name the field of each finding.

Design: each detector is a regex that over-approximates plus a validator (checksum, octet range,
digit count) that removes look-alikes - years, ids, version strings. Detectors are gated by cheap
substring checks so that the common case (a row with no '@', no digits...) costs almost nothing.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.pii_people import find_addresses, find_names
from tuneforge.data.text import progress_iter, resolve_lines

EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
SSN = "SSN"
SECRET = "SECRET"
PERSON = "PERSON"
ADDRESS = "ADDRESS"
PII_TYPES = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SSN, SECRET, PERSON, ADDRESS)

# When two detectors claim overlapping text the longer match wins; on equal length, the type
# listed first here wins (a specific, checksummed type beats a loose one).
_PRIORITY = {t: k for k, t in enumerate((SECRET, CREDIT_CARD, IBAN, SSN, EMAIL, IP_ADDRESS, PHONE, ADDRESS,
                                          PERSON))}


@dataclass(frozen=True)
class PiiMatch:
    type: str
    start: int
    end: int
    text: str


# --- validators -----------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if k % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Official IBAN lengths (SWIFT IBAN registry) for the countries most likely to appear; other
# country codes fall back to the generic 15-34 range and still need the mod-97 checksum.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_valid(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters -> 10..35, number mod 97 == 1."""
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def card_issuer_valid(digits: str) -> bool:
    """Whether a card number's issuer prefix (IIN) and length match a real card network. With Luhn
    this rejects look-alikes Luhn alone passes one time in ten: a 14-digit timestamp 2023110512304x
    (no network issues 14-digit numbers starting with 2), epoch milliseconds, order ids."""
    n, p2, p3, p4, p6 = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return n in (14, 16, 19)  # Diners Club
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if p2 == 62 or 2200 <= p4 <= 2204:
        return 16 <= n <= 19  # UnionPay, Mir
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):
        return 13 <= n <= 19  # Maestro
    return False


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    # The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
    return (
        area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"
    )


# --- patterns ---------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# Card numbers: 13-19 digits, optionally in groups separated by single spaces or dashes.
_CARD_RE = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d])")

_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not preceded by a digit or a dot-digit (so "999.1.1.1" and "1.2.3.4.5" yield nothing inside).
_IPV4_RE = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")
# Over-approximate IPv6 candidates, then let `ipaddress` decide.
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:(?=:))(?:[0-9A-Fa-f]{0,4}:){1,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)

_SSN_RE = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
# Without dashes (123456789, 123 45 6789) nine digits are as often a zip+4 or an id: only with
# "SSN" / "social security" just before them.
_SSN_BARE_RE = re.compile(r"(?<![\d-])(\d{3}) ?(\d{2}) ?(\d{4})(?![\d-])")
_SSN_CONTEXT = re.compile(r"(?i)(?:\bssn|\bss#|\bsocial(?:\s+security)?(?:\s+(?:number|no\.?|#))?)\W{0,4}"
                          r"(?:(?:is|was|:)\W{0,3})?$")

# Phones. Each alternative needs structure a year or a bare id does not have: a leading "+",
# a parenthesised area code, a trunk "0", or NANP 3-3-4 grouping with separators.
_PHONE_RE = re.compile(
    # not the tail of a longer digit-group sequence (an account number, an invalid IBAN)
    r"(?<![\w+])(?<!\d[ .-])(?:"
    # international: +CC then groups separated by space/dot/dash, optional (0) or (area)
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}"
    # NANP: (415) 555-0134 / 415-555-0134 / 415.555.0134 / 1-800-555-0199
    r"|(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    # trunk-prefixed national numbers with separators: 020 7946 0958, 06 12 34 56 78, 030/1234567
    r"|0\d{1,4}(?:[ ./-]\d{2,8}){1,4}"
    r")(?![\w])"
)

_SECRET_RES = (
    # AWS access key ids (long-term AKIA, temporary ASIA, and the rarer service prefixes)
    re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    # GitHub personal/OAuth/user/server/refresh tokens and fine-grained PATs
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    # OpenAI-style keys: sk-, sk-proj-, sk-svcacct-, sk-admin- with a long random tail
    re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}(?![\w-])"),
    # Slack tokens and incoming-webhook URLs
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"),
    # PEM private keys: the whole block when its END line is present, else the header alone
    re.compile(
        r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:[\s\S]*?-----END \1PRIVATE KEY-----)?"
    ),
)

# Generic assignments: only the value (group "value") is the secret; the key name stays readable.
_ASSIGN_RE = re.compile(
    r"(?i)\b(?:password|passwd|pwd|passphrase|secret|client[_-]?secret|secret[_-]?key|api[_-]?key"
    r"|apikey|access[_-]?key|access[_-]?token|auth[_-]?token|private[_-]?key)"
    r"[\"']?\s*[:=]\s*(?P<q>[\"']?)(?P<value>[^\s\"'`,;]{4,})(?P=q)"
)
_ASSIGN_GATE = ("pass", "pwd", "secret", "key", "token")
# Placeholders people write in docs and code samples are not secrets.
_PLACEHOLDER_RE = re.compile(
    r"(?i)^(?:none|null|nil|true|false|undefined|changeme|password|secret|example|redacted"
    r"|your[_-]?\w*|x+|\*+|\.+|-+|<.*>|\$\{?.*|\{\{.*|%\(.*|os\.\w+.*|env\[.*|getenv.*)$"
)
_SECRET_GATE = ("AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                "sk-", "xox", "hooks.slack", "PRIVATE KEY")


# --- detectors ----------------------------------------------------------------------------------
# Python's regex engine is fast only when a pattern starts with a plain character class; patterns
# that open with a lookbehind are tried at every position (~100 ns per character). So candidates are
# located first - digit runs, '@' signs, hex-colon pairs, keyword hits - with cheap scans, and the
# exact patterns run only on short windows around them (`finditer(text, pos, endpos)`: lookbehinds
# still see the real preceding text; windows end one character past the candidate so the closing
# lookaheads see the real next character).

_Found = list[PiiMatch]
_DIGITS = "0123456789"
_DIGIT_RUN = re.compile(r"\d[\d().+/ -]*")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Scan:
    """Candidate windows of one text, computed once and shared by the detectors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.digit_windows: list[tuple[int, int]] = []
        self.iban_windows: list[tuple[int, int]] = []
        self.has_digit = any(d in text for d in _DIGITS)
        if self.has_digit:
            n = len(text)
            for m in _DIGIT_RUN.finditer(text):
                start, end = m.start(), m.end()
                if start >= 2 and text[start - 2] in _UPPER and text[start - 1] in _UPPER:
                    # IBAN: country letters + check digits, then up to 30 chars with spaces.
                    self.iban_windows.append((start - 2, min(n, start + 44)))
                end = len(text[start:end].rstrip(" (./+-")) + start
                # The shortest digit-based finding is an IPv4 address like 1.1.1.1 (7 chars).
                if end - start >= 7:
                    self.digit_windows.append((max(0, start - 1), min(n, end + 1)))

    def around(self, needle: str, before: int, after: int) -> list[tuple[int, int]]:
        """Merged windows around each occurrence of `needle`."""
        text, out = self.text, []
        i = text.find(needle)
        while i != -1:
            lo, hi = max(0, i - before), min(len(text), i + after)
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
            i = text.find(needle, i + 1)
        return out


def _finditer(rx: re.Pattern, text: str, windows: list[tuple[int, int]]):
    """Matches of `rx` within the windows, each span once (windows may overlap)."""
    seen = set()
    for lo, hi in windows:
        for m in rx.finditer(text, lo, hi):
            if m.span() not in seen:
                seen.add(m.span())
                yield m


def _emails(scan: _Scan, out: _Found) -> None:
    if "@" not in scan.text:
        return
    # RFC 5321 caps the local part at 64 and the domain at 255 characters.
    windows = scan.around("@", 65, 257)
    out.extend(PiiMatch(EMAIL, m.start(), m.end(), m.group())
               for m in _finditer(_EMAIL_RE, scan.text, windows))


def _cards(scan: _Scan, out: _Found) -> None:
    for m in _finditer(_CARD_RE, scan.text, scan.digit_windows):
        raw = m.group()
        seps = {c for c in raw if not c.isdigit()}
        if len(seps) > 1:  # "4111 1111-1111 1111" style mixing is not how cards are written
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and card_issuer_valid(digits) and luhn_valid(digits):
            out.append(PiiMatch(CREDIT_CARD, m.start(), m.end(), raw))


def _ibans(scan: _Scan, out: _Found) -> None:
    text = scan.text
    for m in _finditer(_IBAN_RE, text, scan.iban_windows):
        raw = m.group()
        compact = raw.replace(" ", "")
        expected = _IBAN_LENGTHS.get(compact[:2])
        if expected is not None and len(compact) > expected:
            # The last group may have swallowed a following token; trim to the registry length.
            keep, end = 0, m.start()
            for k, ch in enumerate(raw):
                if ch != " ":
                    keep += 1
                if keep == expected:
                    end = m.start() + k + 1
                    break
            raw, compact = text[m.start() : end], compact[:expected]
        if iban_valid(compact):
            out.append(PiiMatch(IBAN, m.start(), m.start() + len(raw), raw))


# Dotted quads that are versions: "v1.2.3.4", "numpy==1.2.3.4", "version 1.2.3.4", "Build 10.0.22.1".
_VERSION_BEFORE = re.compile(
    r"(?i)(?:(?<![a-z])v ?|[=<>~!]=|\b(?:version|ver|release|build|firmware|fw|rev|revision|update|patch"
    r"|kernel|driver|bios|sdk|api|app|tag)\b\W{0,3})$"
)


def _ips(scan: _Scan, out: _Found) -> None:
    text = scan.text
    out.extend(PiiMatch(IP_ADDRESS, m.start(), m.end(), m.group())
               for m in _finditer(_IPV4_RE, text, scan.digit_windows)
               if not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()))
    if ":" not in text:
        return
    # IPv6 candidates: a colon with a hex digit or colon on both sides ("user: hi" is not one).
    n, windows = len(text), []
    i = text.find(":")
    while i != -1:
        if 0 < i < n - 1 and text[i - 1] in _HEX_COLON and text[i + 1] in _HEX_COLON:
            lo, hi = max(0, i - 46), min(n, i + 47)  # an IPv6 address is at most 45 characters
            if windows and lo <= windows[-1][1]:
                windows[-1] = (windows[-1][0], hi)
            else:
                windows.append((lo, hi))
        i = text.find(":", i + 1)
    for m in _finditer(_IPV6_RE, text, windows):
        cand = m.group()
        # Two hex groups at least: "a::" style fragments are more often code than addresses.
        if sum(1 for g in re.split(r"[:.]", cand) if g) < 2:
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        out.append(PiiMatch(IP_ADDRESS, m.start(), m.end(), cand))


def _ssns(scan: _Scan, out: _Found) -> None:
    text = scan.text
    for m in _finditer(_SSN_RE, text, scan.digit_windows):
        if _ssn_valid(*m.groups()):
            out.append(PiiMatch(SSN, m.start(), m.end(), m.group()))
    for m in _finditer(_SSN_BARE_RE, text, scan.digit_windows):
        if _ssn_valid(*m.groups()) and _SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start()):
            out.append(PiiMatch(SSN, m.start(), m.end(), m.group()))


_DATE_RE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")
# A bare 10-digit North American number: area code and exchange start 2-9, the area code's middle
# digit is not 9 and neither is an N11 service code. That already rules out Unix timestamps (1...)
# and most counters; ids that happen to fit are recognised by the word before them.
_NANP_BARE_RE = re.compile(r"(?<![\w+.-])1?([2-9][0-8]\d)([2-9]\d\d)\d{4}(?![\w-])")
_ID_BEFORE = re.compile(
    r"(?i)\b(?:order|invoice|account|acct|id|isbn|issn|tracking|ref|reference|serial|transaction|txn"
    r"|confirmation|ticket|case|po|sku|upc|ean|timestamp|ts|zip|customer|member|policy|claim|receipt"
    r"|booking|reservation|batch|lot|build|version)\b(?:\W+(?:no|nr|number|num|id|code|#))?\W{0,3}$"
)


def _phones(scan: _Scan, out: _Found) -> None:
    for m in _finditer(_PHONE_RE, scan.text, scan.digit_windows):
        raw = m.group()
        n_digits = sum(c.isdigit() for c in raw)
        # E.164 caps numbers at 15 digits; fewer than 8 is an extension or a short code.
        if not 8 <= n_digits <= 15:
            continue
        if raw[0] == "0" and _DATE_RE.match(raw):  # 01.02.2024 is a date, not a number
            continue
        out.append(PiiMatch(PHONE, m.start(), m.end(), raw))
    text = scan.text
    for m in _finditer(_NANP_BARE_RE, text, scan.digit_windows):
        area, exchange = m.group(1), m.group(2)
        if area[1:] == "11" or exchange[1:] == "11":
            continue
        if _ID_BEFORE.search(text, max(0, m.start() - 28), m.start()):
            continue
        out.append(PiiMatch(PHONE, m.start(), m.end(), m.group()))


def _secrets(scan: _Scan, out: _Found) -> None:
    text = scan.text
    if any(g in text for g in _SECRET_GATE):
        for rx in _SECRET_RES:
            out.extend(PiiMatch(SECRET, m.start(), m.end(), m.group()) for m in rx.finditer(text))
    if "=" not in text and ":" not in text:
        return
    lowered = text.lower()
    windows: list[tuple[int, int]] = []
    for key in _ASSIGN_GATE:
        if key in lowered:
            # The keyword may sit inside a longer name (client_secret); start a little before it.
            for lo, hi in _Scan(lowered).around(key, 16, 300):
                windows.append((lo, hi))
    if not windows:
        return
    windows.sort()
    for m in _finditer(_ASSIGN_RE, text, windows):
        value = m.group("value")
        if _PLACEHOLDER_RE.match(value) or len(set(value)) < 3:
            continue
        out.append(PiiMatch(SECRET, m.start("value"), m.end("value"), value))


def _persons(scan: _Scan, out: _Found) -> None:
    if scan.text.lower() != scan.text:  # a name needs a capital letter
        out.extend(PiiMatch(PERSON, a, b, t) for a, b, t in find_names(scan.text))


def _addresses(scan: _Scan, out: _Found) -> None:
    if scan.digit_windows or scan.has_digit:
        out.extend(PiiMatch(ADDRESS, a, b, t) for a, b, t in find_addresses(scan.text))


_DETECTORS: dict[str, Callable[[_Scan, _Found], None]] = {
    EMAIL: _emails,
    CREDIT_CARD: _cards,
    IBAN: _ibans,
    IP_ADDRESS: _ips,
    SSN: _ssns,
    PHONE: _phones,
    SECRET: _secrets,
    PERSON: _persons,
    ADDRESS: _addresses,
}


def _resolve_overlaps(found: _Found) -> _Found:
    """Keep a non-overlapping subset: longest first, ties by type priority, then leftmost."""
    found.sort(key=lambda m: (m.start - m.end, _PRIORITY[m.type], m.start))
    taken: list[tuple[int, int]] = []
    kept: _Found = []
    for m in found:
        if all(m.end <= s or m.start >= e for s, e in taken):
            taken.append((m.start, m.end))
            kept.append(m)
    kept.sort(key=lambda m: m.start)
    return kept


def find_pii(text: str, types: Iterable[str] | None = None) -> list[PiiMatch]:
    """All PII matches in `text`, non-overlapping, ordered by position."""
    wanted = PII_TYPES if types is None else tuple(types)
    unknown = set(wanted) - set(PII_TYPES)
    if unknown:
        raise ValueError(f"unknown PII types {sorted(unknown)}; expected some of {list(PII_TYPES)}")
    scan = _Scan(text)
    found: _Found = []
    for kind in wanted:
        _DETECTORS[kind](scan, found)
    return _resolve_overlaps(found) if len(found) > 1 else found


def redact(text: str, types: Iterable[str] | None = None) -> tuple[str, list[PiiMatch]]:
    """Replace every match with its typed placeholder (`<EMAIL>`, `<SECRET>`, ...)."""
    matches = find_pii(text, types)
    return _substitute(text, matches), matches


def _substitute(text: str, matches: list[PiiMatch]) -> str:
    if not matches:
        return text
    parts, pos = [], 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(f"<{m.type}>")
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


def _mask_token(s: str) -> str:
    return s[:1] + "***" if s else s


def mask_example(s: str, type: str | None = None) -> str:
    """A report-safe rendering that shows the shape of a finding but not its value:
    `john.doe@example.com` -> `j***@e***.com`, `4111 1111 1111 1111` -> `**** **** **** 1111`."""
    if type == EMAIL or (type is None and "@" in s):
        local, _, domain = s.partition("@")
        host, dot, tld = domain.rpartition(".")
        return f"{_mask_token(local)}@{_mask_token(host)}{dot}{tld}" if dot else f"{_mask_token(local)}@***"
    if type == SECRET:
        # Keep the recognisable prefix (AKIA, ghp_, sk-) that tells a reader which secret it is.
        prefix = re.match(r"[A-Za-z]+[_-]|AKIA|ASIA|-----BEGIN [A-Z ]+-----", s)
        head = prefix.group() if prefix and len(prefix.group()) < len(s) else s[:2]
        return head + "***"
    # Digit-bearing types: hide every digit/letter but the last four, keep separators for shape.
    keep_from = len(s)
    seen = 0
    for k in range(len(s) - 1, -1, -1):
        if s[k].isalnum():
            seen += 1
            if seen == 4:
                keep_from = k
                break
    if seen < 4 or sum(c.isalnum() for c in s) <= 6:
        keep_from = len(s)  # too short to reveal anything safely
    head = "".join("*" if c.isalnum() else c for c in s[:keep_from])
    return head + s[keep_from:]


# --- dataset scan ------------------------------------------------------------------------------------
# Personal data sits wherever a dataset author put it, not only in the trained text: a row-level
# "user_email", a nested meta.contact.phone, a tool call's arguments. Every string value of the row is
# scanned (and redacted), each with its field path. Integers are scanned too (a phone stored as
# 4155550134), but only a match covering the whole number counts. The value's key goes in front of it
# as context ("ssn: 123456789", "password: hunter22", "version: 1.2.3.4"), so context-gated detectors
# see the field name the way they would see it in prose; matches inside that prefix are dropped.


def _field_context(key: str | None) -> str:
    return f"{key}: " if key else ""


def find_pii_in_field(value: str, key: str | None, types: Iterable[str] | None = None) -> list[PiiMatch]:
    """`find_pii` of one field value, its key name serving as preceding context."""
    prefix = _field_context(key)
    if not prefix:
        return find_pii(value, types)
    n = len(prefix)
    return [PiiMatch(m.type, m.start - n, m.end - n, m.text)
            for m in find_pii(prefix + value, types) if m.start >= n]


def iter_fields(row: Any, path: str = "", key: str | None = None):
    """(path, key, value) for every string and integer in a row, nested dicts and lists included.
    Paths look like `messages[1].content` or `meta.contact.phone`; `key` is the nearest dict key."""
    if isinstance(row, str) or (isinstance(row, int) and not isinstance(row, bool)):
        yield path, key, row
    elif isinstance(row, Mapping):
        for k, v in row.items():
            yield from iter_fields(v, f"{path}.{k}" if path else str(k), str(k))
    elif isinstance(row, (list, tuple)):
        for i, v in enumerate(row):
            yield from iter_fields(v, f"{path}[{i}]", key)


_INDEX = re.compile(r"\[\d+\]")


def field_pattern(path: str) -> str:
    """`messages[3].content` -> `messages[].content`: the field as a report lists it."""
    return _INDEX.sub("[]", path)


def _value_matches(value: str | int, key: str | None, types) -> list[PiiMatch]:
    if isinstance(value, str):
        return find_pii_in_field(value, key, types)
    text = str(value)
    return [m for m in find_pii_in_field(text, key, types) if m.start == 0 and m.end == len(text)]


@dataclass
class PiiFinding:
    index: int
    line: int
    type: str
    masked: str
    field: str = ""


@dataclass
class PiiReport:
    rows_scanned: int = 0
    rows_with_pii: int = 0
    counts: Counter = field(default_factory=Counter)
    # Up to `max_examples` masked examples per type, each with its row index, line and field.
    examples: dict[str, list[PiiFinding]] = field(default_factory=dict)
    # Row index -> types found, for `clean` to redact or drop exactly these rows.
    rows: dict[int, list[str]] = field(default_factory=dict)
    # Row index -> the fields (paths) those findings were in.
    row_fields: dict[int, list[str]] = field(default_factory=dict)
    # Every field seen (as `field_pattern`), with how many rows have it: what "scanned" covered.
    fields_scanned: Counter = field(default_factory=Counter)
    # Field pattern -> type -> matches: where the findings are.
    by_field: dict[str, Counter] = field(default_factory=dict)


def scan_rows(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    types: Iterable[str] | None = None,
    max_examples: int = 5,
    progress: bool = False,
) -> PiiReport:
    """Scan every field of every row; counts per type and per field, masked examples, the rows involved."""
    lines = resolve_lines(len(rows), line_numbers)
    wanted = None if types is None else tuple(types)
    report = PiiReport(rows_scanned=len(rows))
    items = progress_iter(rows, total=len(rows), description="PII scan", enabled=progress)
    for i, row in enumerate(items):
        found: set[str] = set()
        hit_fields: list[str] = []
        seen_fields: set[str] = set()
        for path, key, value in iter_fields(row):
            pattern = field_pattern(path)
            seen_fields.add(pattern)
            for m in _value_matches(value, key, wanted):
                found.add(m.type)
                if not hit_fields or hit_fields[-1] != path:
                    hit_fields.append(path)
                report.counts[m.type] += 1
                report.by_field.setdefault(pattern, Counter())[m.type] += 1
                examples = report.examples.setdefault(m.type, [])
                if len(examples) < max_examples:
                    examples.append(PiiFinding(i, lines[i], m.type, mask_example(m.text, m.type), path))
        report.fields_scanned.update(seen_fields)
        if found:
            report.rows_with_pii += 1
            report.rows[i] = sorted(found)
            report.row_fields[i] = hit_fields
    return report


def _redact_value(value: str | int, key: str | None, types) -> tuple[Any, int]:
    matches = _value_matches(value, key, types)
    if not matches:
        return value, 0
    if not isinstance(value, str):  # a whole-number match: the number becomes its placeholder
        return f"<{matches[0].type}>", 1
    return _substitute(value, matches), len(matches)


def redact_row(row: Mapping[str, Any], types: Iterable[str] | None = None) -> tuple[dict, int]:
    """A copy of a row with every field redacted, meta included (the same fields `scan_rows` scans);
    returns (row, matches replaced)."""
    wanted = None if types is None else tuple(types)
    total = 0

    def fix(value: Any, key: str | None) -> Any:
        nonlocal total
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            new, n = _redact_value(value, key, wanted)
            total += n
            return new
        if isinstance(value, Mapping):
            return {k: fix(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [fix(v, key) for v in value]
        return value

    return fix(row, None), total
