"""Person names and postal addresses in free text: gazetteer- and pattern-based, no model.

Names: a capitalised given name from a list of ~800 common given names, an optional middle initial,
then a capitalised family name; or a title (Mr, Mrs, Ms, Dr, Prof...) before capitalised names.
Given names that are also everyday words or places (Grace, Jordan, Austin, Bill...) need a family
name from the surname list ("Bill Anderson" yes, "Bill Payment" no). Misses: names written in lower
case, given names outside the list, a given name alone. A trained NER model (presidio + spaCy) would
do better, but none can be installed here; these lists ship in tuneforge/assets/pii.

Addresses: a house number, street name words and a street type (Main Street, Fifth Ave, Mt Lee Dr.),
with an optional direction, unit and ", City, ST 12345"; P.O. boxes; German "Hauptstraße 5" and
French/Spanish/Italian "15 Rue de Rivoli". A number that reads as a count, a chapter or a year
("the 9 Supreme Court justices", "since 1998 Park Street...") is not a house number. Misses: lower
case addresses, street types outside the list, most non-US/EU formats.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
_CAP = rf"[{_UP}][{_LOW}]+"
# A family name: capitalised, may continue after an apostrophe or hyphen (O'Brien, Lopez-Martinez, McDonald).
_SURNAME = rf"(?:[{_UP}][{_LOW}]*['’-])?[{_UP}][{_LOW}]+(?:[A-Z][{_LOW}]+)?(?:-[{_UP}][{_LOW}]+)?"
_NAME_AT = re.compile(rf"({_CAP})(?:\s+[{_UP}]\.)?\s+({_SURNAME})\b")
# Capitalised words are found with a pattern that opens with a character class (fast in `re`), and the
# full name pattern runs only where one of them is a given name.
_CAP_WORD = re.compile(_CAP)
_TITLE_GATE = ("Mr", "Ms", "Dr", "Prof", "Miss", "Mx", "Sir", "Dame")
_TITLE_RE = re.compile(
    rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\.?\s+(?:{_CAP}\s+)?(?:[{_UP}]\.\s+)?{_SURNAME}\b"
)

# Capitalised words that follow a given name without being a family name.
_NOT_SURNAME_WORDS = """
the and or of for to in on at by with from is was are were has had have will would can could may might
said says asked told wrote replied thanks thank hi hello dear mr mrs ms dr street st avenue ave road rd
boulevard lane drive court place way city county state river lake beach park station airport hotel
church school college university hospital center centre team group department service services support
company inc llc ltd corp foundation institute music awards sale day night week month year period pay
payment monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december christmas easter i you he she we they it my your his her
our their this that these those here there when where what who why how if but not no yes all any some
jr sr ii iii iv
"""
_NOT_SURNAMES = frozenset(_NOT_SURNAME_WORDS.split())


def _asset_words(name: str) -> frozenset[str]:
    text = resources.files("tuneforge").joinpath("assets", "pii", name).read_text(encoding="utf-8")
    return frozenset(w.casefold() for line in text.splitlines() if not line.startswith("#") for w in line.split())


@functools.lru_cache(maxsize=1)
def _gazetteers() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    return _asset_words("first_names.txt"), _asset_words("ambiguous_first_names.txt"), _asset_words("surnames.txt")


def find_names(text: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each person name."""
    first, ambiguous, surnames = _gazetteers()
    out = []
    if any(t in text for t in _TITLE_GATE):
        out.extend((m.start(), m.end(), m.group()) for m in _TITLE_RE.finditer(text))
    for w in _CAP_WORD.finditer(text):
        start = w.start()
        if start and text[start - 1].isalnum():
            continue
        given = w.group().casefold()
        if given not in first and given not in ambiguous:
            continue
        m = _NAME_AT.match(text, start)
        if m is None:
            continue
        surname = m.group(2).casefold()
        if surname in _NOT_SURNAMES or surname in first and surname not in surnames:
            continue  # "Emily And", "Anna Maria" (two given names) are not given + family name
        if given in ambiguous and surname not in surnames and surname.replace("'", "") not in surnames:
            continue
        out.append((m.start(), m.end(), m.group()))
    return out


_NUMBER = r"\d{1,6}[A-Z]?"
_DIRECTION = r"(?:NE|NW|SE|SW|North|South|East|West|N|S|E|W)\b\.?"
_STREET_WORD = rf"(?:{_CAP}|[{_UP}]\.?|\d{{1,3}}(?:st|nd|rd|th))"  # Oak, P (an initial), 2nd
# Abbreviations may end with a dot; a full word's dot ends the sentence.
_STREET_TYPE = (r"(?:(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Terrace|Way|Circle|Parkway|Highway"
                r"|Square|Trail|Loop|Plaza|Alley|Crescent|Close|Row|Mews|Grove|Gardens)\b"
                r"|(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Ter|Cir|Pkwy|Hwy|Sq|Trl)\b\.?)")
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|Room|Rm|#)\.?\s*#?[A-Za-z0-9-]{1,6})"
_PLACE = (rf"(?:,\s*{_CAP}(?:\s+{_CAP}){{0,2}}"
          rf"(?:,\s*[A-Z]{{2}}\b(?:\s+\d{{5}}(?:-\d{{4}})?)?|\s+\d{{5}}(?:-\d{{4}})?\b))")
_US_ADDRESS_RE = re.compile(
    rf"\b(?P<number>{_NUMBER})\s+(?:{_DIRECTION}\s+)?(?:{_STREET_WORD}\s+){{1,4}}?{_STREET_TYPE}"
    rf"(?:\s+{_DIRECTION})?{_UNIT}?{_PLACE}?"
)
_PO_BOX_RE = re.compile(rf"\bP\.?\s?O\.?\s+Box\s+\d{{1,6}}\b{_PLACE}?")
_DE_ADDRESS_RE = re.compile(
    rf"\b[{_UP}][{_LOW}]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{{1,4}}[a-z]?\b"
    rf"(?:,\s*\d{{5}}\s+{_CAP})?"
)
_ROMANCE_ADDRESS_RE = re.compile(
    rf"\b\d{{1,4}},?\s+(?:Rue|Avenue|Boulevard|Calle|Via|Viale|Avenida|Rua|Piazza|Plaza)\s+"
    rf"(?:(?:de|du|des|la|le|les|del|della|di|da|do|dos)\s+)*{_CAP}(?:\s+{_CAP})?"
    # Italian, Spanish, Portuguese order: street, then number ("Via Roma 10", "Calle Mayor 5")
    rf"|\b(?:Via|Viale|Corso|Piazza|Calle|Avenida|Rua)\s+(?:(?:de|del|della|di|da|do|dos)\s+)*{_CAP}"
    rf"(?:\s+{_CAP})?,?\s+\d{{1,4}}[a-z]?\b"
)
# A number read as a count, a chapter or a year, not a house number.
_NOT_HOUSE_NUMBER = re.compile(
    r"(?i)\b(?:the|these|those|all|top|chapter|section|step|steps|version|page|pages|since|in|of|about|over|"
    r"under|than|only|just|first|last|next|scored|won|lost|ordered|bought|sold|has|have|had)\s*$"
)


def find_addresses(text: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each postal address."""
    out = []
    for m in _US_ADDRESS_RE.finditer(text):
        if _NOT_HOUSE_NUMBER.search(text, max(0, m.start() - 16), m.start()):
            continue
        out.append((m.start(), m.end(), m.group()))
    for rx in (_PO_BOX_RE, _DE_ADDRESS_RE, _ROMANCE_ADDRESS_RE):
        out.extend((m.start(), m.end(), m.group()) for m in rx.finditer(text))
    return out
