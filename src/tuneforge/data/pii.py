"""Personal data and secrets in training text: detection, redaction, masked examples for reports.

Covered: email, phone numbers, credit cards (Luhn), IBAN (mod-97), IPv4/IPv6, US SSN, and secrets
(AWS access key ids, GitHub tokens, OpenAI-style keys, Slack tokens, PEM private keys, generic
`password=` / `api_key=` assignments).

Not covered: personal names and postal addresses. Doing those well needs a trained NER model
(e.g. presidio + spaCy), none of which is installed; a regex for them would flag every capitalised
phrase, and a scanner users learn to ignore is worse than an honest gap.

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

from tuneforge.data.text import full_text, progress_iter, resolve_lines

EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
SSN = "SSN"
SECRET = "SECRET"
PII_TYPES = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SSN, SECRET)

# When two detectors claim overlapping text the longer match wins; on equal length, the type
# listed first here wins (a specific, checksummed type beats a loose one).
_PRIORITY = {t: k for k, t in enumerate((SECRET, CREDIT_CARD, IBAN, SSN, EMAIL, IP_ADDRESS, PHONE))}


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
        if any(d in text for d in _DIGITS):
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
        # Issuer prefixes start with 2-6 (Mastercard 2-series, Amex 3, Visa 4, MC 5, Discover 6);
        # with Luhn this rejects 98% of random digit runs (ids, timestamps) of card length.
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits):
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


def _ips(scan: _Scan, out: _Found) -> None:
    text = scan.text
    out.extend(PiiMatch(IP_ADDRESS, m.start(), m.end(), m.group())
               for m in _finditer(_IPV4_RE, text, scan.digit_windows))
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
    for m in _finditer(_SSN_RE, scan.text, scan.digit_windows):
        if _ssn_valid(*m.groups()):
            out.append(PiiMatch(SSN, m.start(), m.end(), m.group()))


_DATE_RE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")


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


_DETECTORS: dict[str, Callable[[_Scan, _Found], None]] = {
    EMAIL: _emails,
    CREDIT_CARD: _cards,
    IBAN: _ibans,
    IP_ADDRESS: _ips,
    SSN: _ssns,
    PHONE: _phones,
    SECRET: _secrets,
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
    if not matches:
        return text, matches
    parts, pos = [], 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(f"<{m.type}>")
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts), matches


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


@dataclass
class PiiFinding:
    index: int
    line: int
    type: str
    masked: str


@dataclass
class PiiReport:
    rows_scanned: int = 0
    rows_with_pii: int = 0
    counts: Counter = field(default_factory=Counter)
    # Up to `max_examples` masked examples per type, each with its row index and line.
    examples: dict[str, list[PiiFinding]] = field(default_factory=dict)
    # Row index -> types found, for `clean` to redact or drop exactly these rows.
    rows: dict[int, list[str]] = field(default_factory=dict)


def scan_rows(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    types: Iterable[str] | None = None,
    max_examples: int = 5,
    text_of: Callable[[Mapping[str, Any]], str] = full_text,
    progress: bool = False,
) -> PiiReport:
    """Scan every row's text; counts per type, masked examples, and the rows involved."""
    lines = resolve_lines(len(rows), line_numbers)
    wanted = None if types is None else tuple(types)
    report = PiiReport(rows_scanned=len(rows))
    items = progress_iter(rows, total=len(rows), description="PII scan", enabled=progress)
    for i, row in enumerate(items):
        matches = find_pii(text_of(row), wanted)
        if not matches:
            continue
        report.rows_with_pii += 1
        report.rows[i] = sorted({m.type for m in matches})
        for m in matches:
            report.counts[m.type] += 1
            examples = report.examples.setdefault(m.type, [])
            if len(examples) < max_examples:
                examples.append(PiiFinding(i, lines[i], m.type, mask_example(m.text, m.type)))
    return report


def redact_row(row: Mapping[str, Any], types: Iterable[str] | None = None) -> tuple[dict, int]:
    """A copy of a normalised row with every text field redacted; returns (row, matches replaced)."""
    wanted = None if types is None else tuple(types)
    total = 0

    def fix(value: Any) -> Any:
        nonlocal total
        if isinstance(value, str):
            new, found = redact(value, wanted)
            total += len(found)
            return new
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: (fix(v) if k in ("content", "text") else v) for k, v in value.items()}
        return value

    out = dict(row)
    if "messages" in out:
        out["messages"] = [fix(dict(m)) for m in out["messages"]]
    for key in ("prompt", "completion", "chosen", "rejected", "text"):
        if key in out:
            out[key] = fix(out[key])
    return out, total
