"""Swap lists and counterfactual copies of rows: demographic terms or names exchanged, whole-word, case-preserving.

    tuneforge data counterfactual train.jsonl --swaps src/tuneforge/assets/fairness/swaps.yaml --out cf.jsonl

The YAML format and the shipped default are described in tuneforge/assets/fairness/swaps.yaml. All swaps of a
text happen in one regex pass, so a pair swaps both ways (he <-> she) without a word being swapped twice.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError

DEFAULT_SWAPS = "default"
# Keys whose string values are not prose: roles, ids and tool plumbing keep their values; meta is the row's own
# bookkeeping (a cohort field must not be flipped along with the text).
_SKIPPED_KEYS = frozenset({"role", "id", "tool_call_id", "name", "type", "tool_calls", "meta"})


@dataclass(frozen=True)
class Term:
    group: str
    cohort: str
    replacement: str
    pair: str = ""     # the entry it comes from, "he<->she" (a pair) or "his->her" (one_way): per-pair statistics


@dataclass
class SwapList:
    source: str
    groups: dict[str, tuple[str, str]]          # group -> its two cohorts
    terms: dict[str, Term] = field(default_factory=dict)   # lower-case word -> what it becomes
    pattern: re.Pattern | None = None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]], source: str, group: str = "swaps") -> SwapList:
        """A one-group list from (a, b) pairs (what a caller builds in code rather than reading a file)."""
        swaps = cls(source, {group: ("a", "b")})
        for a, b in pairs:
            _add(swaps, source, a, Term(group, "a", b, f"{a}<->{b}"))
            _add(swaps, source, b, Term(group, "b", a, f"{a}<->{b}"))
        swaps.pattern = _compile(swaps.terms)
        return swaps

    @property
    def pair_labels(self) -> list[str]:
        """Every entry of the list once, in file order ("he<->she", "his->her")."""
        return list(dict.fromkeys(term.pair for term in self.terms.values()))

    def apply(self, text: str) -> tuple[str, set[str]]:
        """(`text` with every listed word swapped, the labels of the entries that matched)."""
        applied: dict[tuple[str, str, str], int] = {}
        swapped = swap_text(text, self, applied)
        return swapped, {self.terms[word].pair for _, word, _ in applied}

    def restricted(self, groups: list[str]) -> SwapList:
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ConfigError(f"{self.source}: no swap group {', '.join(unknown)}",
                              hint=f"groups in the file: {', '.join(self.groups)}")
        kept = SwapList(self.source, {g: self.groups[g] for g in groups},
                        {w: t for w, t in self.terms.items() if t.group in groups})
        kept.pattern = _compile(kept.terms)
        return kept


def _compile(terms: dict[str, Term]) -> re.Pattern | None:
    if not terms:
        return None
    words = sorted(terms, key=lambda w: (-len(w), w))  # longest first: "boyfriend" before "boy"
    # A term of several words ("new york") matches across any run of whitespace.
    return re.compile(r"(?<!\w)(" + "|".join(r"\s+".join(map(re.escape, w.split())) for w in words) + r")(?!\w)",
                      re.IGNORECASE)


def load_swaps(path: str | None = None) -> SwapList:
    """Read and check a swap list; None or "default" is the shipped one. Problems name the file and the group."""
    if path in (None, DEFAULT_SWAPS):
        source = "tuneforge/assets/fairness/swaps.yaml"
        text = resources.files("tuneforge").joinpath("assets", "fairness", "swaps.yaml").read_text(encoding="utf-8")
    else:
        source = str(path)
        if not Path(path).is_file():
            raise ConfigError(f"{source}: no such swap list", hint="see tuneforge/assets/fairness/swaps.yaml")
        text = Path(path).read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("groups"), dict) or not document["groups"]:
        raise ConfigError(f"{source}: groups: expected a mapping of group name -> {{cohorts, pairs, one_way}}")
    swaps = SwapList(source, {})
    for name, spec in document["groups"].items():
        where = f"{source}: groups.{name}"
        if not isinstance(spec, dict) or set(spec) - {"cohorts", "pairs", "one_way"}:
            raise ConfigError(f"{where}: expected the keys cohorts, pairs and (optionally) one_way")
        cohorts = spec.get("cohorts")
        if not (isinstance(cohorts, list) and len(cohorts) == 2 and all(isinstance(c, str) for c in cohorts)):
            raise ConfigError(f"{where}.cohorts: expected two cohort names, e.g. [male, female]")
        swaps.groups[name] = (cohorts[0], cohorts[1])
        side: dict[str, int] = {}
        for k, pair in enumerate(spec.get("pairs") or []):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) and w.strip() for w in pair)):
                raise ConfigError(f"{where}.pairs[{k}]: expected two words, got {pair!r}")
            for i, (word, other) in enumerate((pair, pair[::-1])):
                _add(swaps, where, word, Term(name, cohorts[i], other, f"{pair[0]}<->{pair[1]}"))
                side[word.lower()] = i
        for word, replacement in (spec.get("one_way") or {}).items():
            if not isinstance(replacement, str) or replacement.lower() not in side:
                raise ConfigError(f"{where}.one_way.{word}: the replacement must be a word of one of the group's "
                                  f"pairs (it fixes the cohort of {word!r}), got {replacement!r}")
            _add(swaps, where, str(word), Term(name, cohorts[1 - side[replacement.lower()]], replacement,
                                               f"{word}->{replacement}"))
    swaps.pattern = _compile(swaps.terms)
    return swaps


def _key(word: str) -> str:
    return " ".join(word.lower().split())


def _add(swaps: SwapList, where: str, word: str, term: Term) -> None:
    key = _key(word)
    if key in swaps.terms:
        raise ConfigError(f"{where}: {word!r} is listed twice (also in group {swaps.terms[key].group}); a word can "
                          "become only one thing", hint="use one_way for a word whose reverse is ambiguous")
    swaps.terms[key] = term


def match_case(original: str, replacement: str) -> str:
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement.lower() if original.islower() else replacement


def swap_text(text: str, swaps: SwapList, applied: dict[tuple[str, str, str], int]) -> str:
    """`text` with every listed word swapped; `applied` counts (group, from, to) in lower case."""
    if swaps.pattern is None:
        return text

    def replace(match: re.Match) -> str:
        word = match.group(0)
        term = swaps.terms[_key(word)]
        key = (term.group, _key(word), term.replacement.lower())
        applied[key] = applied.get(key, 0) + 1
        return match_case(word, term.replacement)

    return swaps.pattern.sub(replace, text)


def _swap_value(value: Any, swaps: SwapList, applied: dict) -> Any:
    if isinstance(value, str):
        return swap_text(value, swaps, applied)
    if isinstance(value, list):
        return [_swap_value(v, swaps, applied) for v in value]
    if isinstance(value, dict):
        return {k: v if k in _SKIPPED_KEYS else _swap_value(v, swaps, applied) for k, v in value.items()}
    return value


def counterfactual_row(row: dict, swaps: SwapList, where: str) -> tuple[dict, list[dict]]:
    """A copy of `row` with every listed term swapped in its text fields, and the swaps that applied (each once,
    with its count); the copy's meta.counterfactual records its source row and those swaps."""
    applied: dict[tuple[str, str, str], int] = {}
    copied = _swap_value(copy.deepcopy(row), swaps, applied)
    if "meta" in row:
        copied["meta"] = copy.deepcopy(row["meta"])
    records = [{"group": g, "from": a, "to": b, "count": n} for (g, a, b), n in sorted(applied.items())]
    copied.setdefault("meta", {})["counterfactual"] = {"source": where, "swaps": records}
    return copied, records


def detect_cohorts(row: dict, swaps: SwapList) -> dict[str, str]:
    """Per group: the cohort whose terms the row's text uses: one cohort, `both`, or `none`."""
    applied: dict[tuple[str, str, str], int] = {}
    _swap_value(row, swaps, applied)
    seen: dict[str, set[str]] = {g: set() for g in swaps.groups}
    for group, word, _ in applied:
        seen[group].add(swaps.terms[word].cohort)
    return {g: (next(iter(s)) if len(s) == 1 else "both" if s else "none") for g, s in seen.items()}
