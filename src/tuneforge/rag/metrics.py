"""Retrieval metrics against gold keys, and ALCE-style citation precision / recall.

Retrieval: a retrieved passage maps to a key (its source file's stem; the demo's gold keys are section names);
repeats of a key are dropped keeping the first, so several chunks of one relevant section count once.
  recall@k = |gold keys among the first k| / |gold keys|;  MRR = 1 / rank of the first relevant key (0 if none);
  nDCG@k = sum_{relevant i<=k} 1/log2(i+1) / sum_{i<=min(k,|gold|)} 1/log2(i+1)  (binary relevance).

Citations (Gao et al. 2023, ALCE): the answer is split into sentences; a sentence is *supported* when the
concatenation of the passages it cites entails it (no citation: unsupported). citation_recall = supported
sentences / sentences. A citation is *precise* unless the sentence is supported, the cited passage alone does not
entail it and the sentence's other citations still do (the citation was not needed). citation_precision =
precise citations / citations. `entails` is pluggable (an NLI model or the judge endpoint); the default is the
documented lexical fallback: the premise entails the claim when it contains at least 60 % of the claim's
content words (lower-cased, >= 3 characters, not stopwords). It is a test-grade proxy, not NLI.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

_CITE = re.compile(r"\[(\d+)\]")
_LEADING_CITES = re.compile(r"^(?:\s*\[\d+\])+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[A-Za-z0-9_]+")
STOPWORDS = frozenset("the and for are but not you all any can had her was one our out has him his how its may "
                      "new now old see two who did get let put say she too use that with this from they will "
                      "would there their what which when where your been have into than then them these those "
                      "such also each only other some very does".split())
LEXICAL_THRESHOLD = 0.6


def _unique(keys: Sequence[str]) -> list[str]:
    seen, out = set(), []
    for key in keys:
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def recall_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    gold_set = set(gold)
    return len(gold_set & set(_unique(retrieved)[:k])) / len(gold_set) if gold_set else 0.0


def reciprocal_rank(retrieved: Sequence[str], gold: Sequence[str]) -> float:
    gold_set = set(gold)
    for rank, key in enumerate(_unique(retrieved), 1):
        if key in gold_set:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    gold_set = set(gold)
    dcg = sum(1.0 / math.log2(i + 1) for i, key in enumerate(_unique(retrieved)[:k], 1) if key in gold_set)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(gold_set)) + 1))
    return dcg / ideal if ideal else 0.0


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if len(w) >= 3 and w not in STOPWORDS}


def lexical_entails(premise: str, claim: str, threshold: float = LEXICAL_THRESHOLD) -> bool:
    words = content_words(claim)
    return bool(words) and len(words & content_words(premise)) / len(words) >= threshold


def split_cited_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without its markers, cited passage numbers) for each sentence of the answer.

    Markers written after the full stop ("... water. [1] Next ...") belong to the sentence they follow: the
    answer prompt asks for a citation after each sentence, and models put it on either side of the stop."""
    out: list[tuple[str, list[int]]] = []
    for sentence in _SENTENCE.split(answer.strip()):
        lead = _LEADING_CITES.match(sentence)
        if lead and out:
            out[-1] = (out[-1][0], list(dict.fromkeys(out[-1][1] + [int(n) for n in _CITE.findall(lead.group(0))])))
            sentence = sentence[lead.end():]
        cites = [int(n) for n in _CITE.findall(sentence)]
        text = " ".join(_CITE.sub(" ", sentence).split())
        if text:
            out.append((text, list(dict.fromkeys(cites))))
    return out


def citation_scores(answer: str, passages: Sequence[str],
                    entails: Callable[[str, str], bool] = lexical_entails) -> dict[str, float]:
    """ALCE citation recall and precision of one answer whose [n] markers index `passages` from 1."""
    sentences = split_cited_sentences(answer)
    supported = cited = precise = 0

    def text_of(numbers):
        return "\n".join(passages[n - 1] for n in numbers if 1 <= n <= len(passages))

    for sentence, cites in sentences:
        ok = bool(cites) and entails(text_of(cites), sentence)
        supported += ok
        for n in cites:
            cited += 1
            if not ok:
                continue
            alone = entails(text_of([n]), sentence)
            rest = [m for m in cites if m != n]
            needed = not (rest and entails(text_of(rest), sentence))
            precise += alone or needed
    return {"citation_recall": supported / len(sentences) if sentences else 0.0,
            "citation_precision": precise / cited if cited else 0.0,
            "sentences": len(sentences), "citations": cited}
