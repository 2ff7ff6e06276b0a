"""Text metrics against hand-worked values."""
from __future__ import annotations

import pytest

from tuneforge.eval import text_metrics as tm
from tuneforge.eval.text_metrics import RAW, SQUAD, Normalization


def test_normalisation_steps_are_individually_switchable():
    text = "  The  Cat, sat! "
    assert tm.normalize_text(text, SQUAD) == "cat sat"
    assert tm.normalize_text(text, RAW) == text
    assert tm.normalize_text(text, Normalization(True, False, False, False)) == "  the  cat, sat! "
    assert tm.normalize_text(text, Normalization(False, True, False, True)) == "The Cat sat"
    # Articles are stripped case-insensitively even without lowercasing, and only as whole words.
    assert tm.normalize_text("The theory", Normalization(False, False, True, True)) == "theory"


def test_exact_match_normalised_raw_and_multi_reference():
    assert tm.exact_match("The Cat!", "cat") == 1.0
    assert tm.exact_match("The Cat!", "cat", RAW) == 0.0
    assert tm.exact_match("dog", ["cat", "a dog"]) == 1.0
    assert tm.corpus_exact_match(["cat", "dog"], ["cat", "cow"]) == 0.5


def test_token_f1_hand_worked():
    # SQuAD normalisation: "the cat sat" -> [cat, sat]; "cat sat down" -> [cat, sat, down].
    # Common tokens 2: P = 2/2, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = (4/3) / (5/3) = 0.8.
    assert tm.token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    # Without normalisation "the" stays: P = 2/3, R = 2/3, F1 = 2/3.
    assert tm.token_f1("the cat sat", "cat sat down", RAW) == pytest.approx(2 / 3)
    # Repeated tokens count with multiplicity: [a, a, b] vs [a, b, b] share {a:1, b:1} -> P = R = 2/3.
    assert tm.token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    # SQuAD v2: an empty answer scores 1 against an empty reference and 0 otherwise.
    assert tm.token_f1("", "") == 1.0
    assert tm.token_f1("", "cat") == 0.0
    assert tm.token_f1("dog", ["cat", "dog"]) == 1.0
    assert tm.corpus_token_f1(["the cat sat", "x"], ["cat sat down", "y"]) == pytest.approx(0.4)


def test_rouge_hand_worked():
    # "the cat sat" vs "the cat sat down": unigrams 3 shared, P = 1, R = 3/4 -> F = 6/7.
    # Bigrams: pred {the cat, cat sat} both in ref's 3 -> P = 1, R = 2/3 -> F = 0.8. LCS = 3 -> F = 6/7.
    s = tm.rouge("the cat sat", "the cat sat down")
    assert s["rouge1"] == pytest.approx(6 / 7)
    assert s["rouge2"] == pytest.approx(0.8)
    assert s["rougeL"] == pytest.approx(6 / 7)
    assert tm.rougeL("the cat sat", "the cat sat down") == pytest.approx(6 / 7)


def test_rouge_stemming_option():
    # With the Porter stemmer "cats" == "cat"; without it they are different tokens (F = 1/2 each side).
    assert tm.rouge1("cats sat", "cat sat", stem=True) == pytest.approx(1.0)
    assert tm.rouge1("cats sat", "cat sat", stem=False) == pytest.approx(0.5)
    assert tm.corpus_rouge(["cats sat", "a b"], ["cat sat", "a b"], stem=False)["rouge1"] == pytest.approx(0.75)


def test_bleu_hand_worked_and_scaled_to_unit_interval():
    # "a b c d e" vs "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths so BP = 1.
    # BLEU = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 0.2 ** 0.25 = 0.66874...
    expected = 0.2 ** 0.25
    assert tm.corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(expected, abs=1e-4)
    # No zero counts, so smoothing does not act and the sentence score equals the corpus one here.
    assert tm.sentence_bleu("a b c d e", "a b c d f") == pytest.approx(expected, abs=1e-4)
    assert tm.sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == 1.0


def test_corpus_bleu_is_not_the_mean_of_sentence_bleu():
    preds, refs = ["a b c d e", "x y"], ["a b c d f", "x z"]
    mean_sentence = sum(tm.sentence_bleu(p, r) for p, r in zip(preds, refs)) / 2
    # Corpus BLEU pools counts: precisions (4+1)/7, 3/5, 2/3, 1/2 over both segments.
    pooled = (5 / 7 * 3 / 5 * 2 / 3 * 1 / 2) ** 0.25
    assert tm.corpus_bleu(preds, refs) == pytest.approx(pooled, abs=1e-4)
    assert abs(mean_sentence - pooled) > 0.01


def test_chrf_hand_worked():
    # chrF, orders 1..6, beta 2, whitespace ignored. "abc" vs "abd":
    # order 1: P = R = 2/3; order 2: {ab, bc} vs {ab, bd}: P = R = 1/2; order 3: 0. Orders 4-6 have no
    # n-grams and sacrebleu averages over the 3 effective orders: P = R = (2/3 + 1/2 + 0) / 3 = 7/18 = F.
    assert tm.sentence_chrf("abc", "abd") == pytest.approx(7 / 18)
    assert tm.corpus_chrf(["abc"], ["abd"]) == pytest.approx(7 / 18)
    assert tm.sentence_chrf("same text", "same text") == 1.0


def test_multi_reference_corpus_scores_accept_ragged_reference_lists():
    assert tm.corpus_bleu(["a b c d e", "x y z w"], [["a b c d e", "q"], "x y z w"]) == pytest.approx(1.0)


def test_corpus_scorers_are_one_on_identical_text_and_errors_are_clear():
    for scorer in (tm.corpus_exact_match, tm.corpus_token_f1, tm.corpus_bleu, tm.corpus_chrf):
        assert scorer(["a b c d"], ["a b c d"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        tm.corpus_token_f1(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        tm.exact_match("a", [])
