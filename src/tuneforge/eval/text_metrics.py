"""Text-overlap metrics: normalised exact match, token F1, ROUGE, BLEU and chrF.

Every score is returned in [0, 1] (tuneforge stores all bounded metrics as fractions; gates read thresholds
above 1 as percentage points, see ``tuneforge.eval.gates``). sacrebleu reports BLEU and chrF on a 0-100 scale,
so they are divided by 100 here.

Two granularities, because they answer different questions:

* **Per-item** functions ``(prediction, reference) -> float``. These are what a *paired* comparison needs
  (bootstrap, permutation test): each item gets one score per model.
* **Corpus** functions ``(predictions, references) -> float``. For ROUGE, exact match and token F1 the corpus
  score is simply the mean of the per-item scores. For BLEU and chrF it is *not*: corpus BLEU pools n-gram
  counts and the brevity penalty over the whole corpus before taking the geometric mean, and corpus chrF pools
  character n-gram statistics. The mean of sentence BLEU is usually noticeably lower than corpus BLEU (sentence
  BLEU needs smoothing for short segments, which penalises them). Report the corpus number as "the BLEU", use
  the sentence numbers for pairing and significance, and never compare one with the other.

A reference may be a single string or a sequence of acceptable strings; per-item scores then take the best
match (SQuAD convention for EM/F1; sacrebleu's multi-reference convention for BLEU/chrF).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from statistics import fmean
from typing import Sequence

Reference = str | Sequence[str]

__all__ = [
    "Normalization",
    "SQUAD",
    "RAW",
    "normalize_text",
    "exact_match",
    "token_f1",
    "rouge",
    "rouge1",
    "rouge2",
    "rougeL",
    "sentence_bleu",
    "sentence_chrf",
    "corpus_exact_match",
    "corpus_token_f1",
    "corpus_rouge",
    "corpus_bleu",
    "corpus_chrf",
]


@dataclass(frozen=True)
class Normalization:
    """Which SQuAD-style normalisation steps to apply, in SQuAD's order.

    The steps run as lowercase -> strip punctuation -> strip articles -> collapse whitespace, which is the order
    of the official SQuAD v1.1/v2.0 evaluation script; changing the order changes results (e.g. "The," keeps
    its article if punctuation is not removed first).

    ``strip_punctuation`` removes ASCII ``string.punctuation`` only, exactly as SQuAD does, so numbers stay
    comparable with published SQuAD-style scores; Unicode punctuation such as "«" or "。" is kept.
    ``strip_articles`` removes the English articles a/an/the as whole words, case-insensitively (so it still
    works when ``lowercase`` is off).
    """

    lowercase: bool = True
    strip_punctuation: bool = True
    strip_articles: bool = True
    collapse_whitespace: bool = True


SQUAD = Normalization()
RAW = Normalization(lowercase=False, strip_punctuation=False, strip_articles=False, collapse_whitespace=False)

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)


def normalize_text(text: str, norm: Normalization = SQUAD) -> str:
    if norm.lowercase:
        text = text.lower()
    if norm.strip_punctuation:
        text = text.translate(_PUNCT_TABLE)
    if norm.strip_articles:
        # Replaced by a space, not removed, so "thecat" is never produced from "the cat".
        text = _ARTICLES.sub(" ", text)
    if norm.collapse_whitespace:
        text = " ".join(text.split())
    return text


def _refs(reference: Reference) -> list[str]:
    if isinstance(reference, str):
        return [reference]
    refs = list(reference)
    if not refs:
        raise ValueError("a reference list must hold at least one string")
    return refs


def _from_percent(score: float) -> float:
    # sacrebleu's 0-100 scores carry float noise (a perfect match can read 100.00000000000004).
    return min(1.0, max(0.0, score / 100.0))


def _check_lengths(predictions: Sequence[str], references: Sequence[Reference]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("cannot score an empty corpus")


# --------------------------------------------------------------------------------------------- exact match / F1
def exact_match(prediction: str, reference: Reference, norm: Normalization = SQUAD) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0. Use ``RAW`` for byte equality."""
    pred = normalize_text(prediction, norm)
    return float(any(pred == normalize_text(r, norm) for r in _refs(reference)))


def _f1_single(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        # SQuAD v2 convention: an empty answer scores 1 only against an empty reference.
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: Reference, norm: Normalization = SQUAD) -> float:
    """SQuAD token F1: bag-of-tokens overlap after normalisation, whitespace tokenised; max over references."""
    pred_tokens = normalize_text(prediction, norm).split()
    return max(_f1_single(pred_tokens, normalize_text(r, norm).split()) for r in _refs(reference))


def corpus_exact_match(predictions: Sequence[str], references: Sequence[Reference],
                       norm: Normalization = SQUAD) -> float:
    _check_lengths(predictions, references)
    return fmean(exact_match(p, r, norm) for p, r in zip(predictions, references))


def corpus_token_f1(predictions: Sequence[str], references: Sequence[Reference], norm: Normalization = SQUAD) -> float:
    _check_lengths(predictions, references)
    return fmean(token_f1(p, r, norm) for p, r in zip(predictions, references))


# ------------------------------------------------------------------------------------------------------ ROUGE
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=8)
def _rouge_scorer(stem: bool):
    # Building a scorer loads the Porter stemmer; cached because per-item scoring would rebuild it per call.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stem)


def rouge(prediction: str, reference: Reference, stem: bool = True) -> dict[str, float]:
    """ROUGE-1/2/L F-measure for one item (max over references, per type).

    rouge_score's default tokenizer lowercases and keeps only ``[a-z0-9]`` runs, so text in non-Latin scripts
    scores 0 against everything; use chrF for such languages.
    """
    scorer = _rouge_scorer(stem)
    best = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref in _refs(reference):
        # rouge_score's argument order is (target, prediction).
        scores = scorer.score(ref, prediction)
        for name in ROUGE_TYPES:
            best[name] = max(best[name], scores[name].fmeasure)
    return best


def rouge1(prediction: str, reference: Reference, stem: bool = True) -> float:
    return rouge(prediction, reference, stem)["rouge1"]


def rouge2(prediction: str, reference: Reference, stem: bool = True) -> float:
    return rouge(prediction, reference, stem)["rouge2"]


def rougeL(prediction: str, reference: Reference, stem: bool = True) -> float:  # noqa: N802 - the metric's name
    return rouge(prediction, reference, stem)["rougeL"]


def corpus_rouge(predictions: Sequence[str], references: Sequence[Reference], stem: bool = True) -> dict[str, float]:
    """Mean per-item F-measure; rouge_score has no pooled corpus variant, and the mean is what papers report."""
    _check_lengths(predictions, references)
    per_item = [rouge(p, r, stem) for p, r in zip(predictions, references)]
    return {name: fmean(s[name] for s in per_item) for name in ROUGE_TYPES}


# ------------------------------------------------------------------------------------------------ BLEU / chrF
def _ref_streams(references: Sequence[Reference]) -> list[list[str]]:
    """sacrebleu wants one stream per reference *position*; items with fewer references are padded with None."""
    ref_lists = [_refs(r) for r in references]
    width = max(len(r) for r in ref_lists)
    return [[r[i] if i < len(r) else None for r in ref_lists] for i in range(width)]  # type: ignore[misc]


def sentence_bleu(prediction: str, reference: Reference) -> float:
    """sacrebleu sentence BLEU (exponential smoothing, effective order), in [0, 1]. For pairing, not reporting."""
    import sacrebleu

    return _from_percent(sacrebleu.sentence_bleu(prediction, _refs(reference)).score)


def corpus_bleu(predictions: Sequence[str], references: Sequence[Reference], tokenize: str = "13a") -> float:
    """sacrebleu corpus BLEU in [0, 1]; the number comparable with published BLEU (divided by 100)."""
    import sacrebleu

    _check_lengths(predictions, references)
    return _from_percent(
        sacrebleu.corpus_bleu(list(predictions), _ref_streams(references), tokenize=tokenize).score
    )


def sentence_chrf(prediction: str, reference: Reference, word_order: int = 0) -> float:
    """sacrebleu sentence chrF in [0, 1]; ``word_order=2`` gives chrF++."""
    return _from_percent(_chrf(word_order).sentence_score(prediction, _refs(reference)).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[Reference], word_order: int = 0) -> float:
    _check_lengths(predictions, references)
    return _from_percent(_chrf(word_order).corpus_score(list(predictions), _ref_streams(references)).score)


@lru_cache(maxsize=4)
def _chrf(word_order: int):
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=word_order)
