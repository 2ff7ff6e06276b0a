"""Leakage between splits: exact prompt overlap and 13-gram overlap, with lines on both sides."""
from __future__ import annotations

import pytest

from tuneforge.data.leakage import LeakPair, find_leakage
from tuneforge.data.text import batch_ngram_hashes, batch_word_hashes, ngram_hashes, word_hashes


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "meta": {}}


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{k}" for k in range(n))


TRAIN = [
    chat("Question zero?", words("t0w", 40)),
    chat("What is the boiling point of water?", words("t1w", 40)),
    chat("Question two?", words("t2w", 40)),
]


def test_exact_prompt_overlap_with_lines():
    test = [chat("what is the boiling point  of WATER?", "100 C"), chat("New question?", "fresh")]
    report = find_leakage({"train": TRAIN, "test": test}, {"train": [5, 6, 7], "test": [20, 21]})
    assert report.exact == [LeakPair("exact", "train", 1, 6, "test", 0, 20, 1.0)]
    assert report.ngram == []
    assert report.leaked_items == {"test": 1}


def test_ngram_overlap_share_and_lines():
    # 20 words from the middle of train row 2's answer: 8 of the eval item's 13 13-grams
    # ("user: e0 e1 e2 assistant: p1..p20" = 25 tokens -> 13 windows, 8 inside the passage).
    leaked = " ".join(f"t2w{k}" for k in range(10, 30))
    test = [chat("e0 e1 e2", leaked), chat("unrelated", words("u", 30))]
    report = find_leakage({"train": TRAIN, "test": test}, {"test": [4, 9]})
    assert report.exact == []
    assert report.ngram == [LeakPair("ngram", "train", 2, 3, "test", 0, 4, round(8 / 13, 4))]
    assert report.leaked_items == {"test": 1}


def test_every_later_split_is_checked_against_earlier_ones():
    shared = chat("Shared question?", "same")
    validation = [chat("Val only?", "v"), shared]
    test = [shared, chat("Question two?", "different answer")]
    extra = [chat("QUESTION ZERO?", "x")]
    report = find_leakage(
        {"train": TRAIN, "validation": validation, "test": test, "eval:mmlu": extra},
        {"validation": [2, 3], "test": [7, 8], "eval:mmlu": [41]},
    )
    assert report.exact == [
        LeakPair("exact", "validation", 1, 3, "test", 0, 7, 1.0),
        LeakPair("exact", "train", 2, 3, "test", 1, 8, 1.0),
        LeakPair("exact", "train", 0, 1, "eval:mmlu", 0, 41, 1.0),
    ]
    assert report.leaked_items == {"validation": 0, "test": 2, "eval:mmlu": 1}


def test_full_text_mode_needs_the_answer_to_match_too():
    test = [chat("What is the boiling point of water?", "different")]
    assert find_leakage({"train": TRAIN, "test": test}, exact_on="full").exact == []
    same = [chat("What is the boiling point of water?", words("t1w", 40))]
    assert len(find_leakage({"train": TRAIN, "test": same}, exact_on="full").exact) == 1


def test_boilerplate_ngrams_are_ignored_and_counted():
    system = words("sys", 15)
    train = [chat(f"q{k}", words(f"a{k}x", 20), system=system) for k in range(3)]
    test = [chat("other", words("b", 20), system=system)]
    # "system: sys0..sys14 user:" = 17 shared tokens -> 5 shared 13-grams, in all 3 train rows.
    report = find_leakage({"train": train, "test": test}, max_ngram_df=2)
    assert report.boilerplate_ngrams == 5 and report.ngram == []
    kept = find_leakage({"train": train, "test": test}, max_ngram_df=3)
    # The eval item has 39 tokens -> 27 13-grams, 5 of them shared with each training row.
    share = round(5 / 27, 4)
    assert [(p.ref_index, p.share) for p in kept.ngram] == [(0, share), (1, share), (2, share)]


def test_min_share_and_n():
    leaked = " ".join(f"t2w{k}" for k in range(10, 30))
    test = [chat("e0 e1 e2", leaked)]
    assert find_leakage({"train": TRAIN, "test": test}, min_share=0.7).ngram == []
    # With 8-grams: 18 windows, 13 inside the passage.
    report = find_leakage({"train": TRAIN, "test": test}, n=8)
    assert [(p.ref_index, p.share) for p in report.ngram] == [(2, round(13 / 18, 4))]


def test_argument_errors():
    with pytest.raises(ValueError, match="training split 'train' not among"):
        find_leakage({"validation": TRAIN})
    with pytest.raises(ValueError, match="line_numbers has 1 entries for 3 rows"):
        find_leakage({"train": TRAIN, "test": []}, {"train": [1]})


def test_batched_hashes_equal_per_text_hashes():
    texts = ["a b c d e f", "", "x y", "a b c d e f g h"]
    hashes, offsets = batch_word_hashes(texts)
    for k, text in enumerate(texts):
        assert hashes[offsets[k] : offsets[k + 1]].tolist() == word_hashes(text).tolist()
    grams, goffs = batch_ngram_hashes(hashes, offsets, 3)
    for k, text in enumerate(texts):
        assert grams[goffs[k] : goffs[k + 1]].tolist() == ngram_hashes(word_hashes(text), 3).tolist()
    # Short texts: one whole-text hash, or nothing with short="skip"; never an n-gram across texts.
    assert [int(goffs[k + 1] - goffs[k]) for k in range(4)] == [4, 0, 1, 6]
    _, skip_offs = batch_ngram_hashes(hashes, offsets, 3, short="skip")
    assert [int(skip_offs[k + 1] - skip_offs[k]) for k in range(4)] == [4, 0, 0, 6]
    # Stable across processes and releases (no salted hash()): a fixed value pins it, because
    # changing it silently changes every dedup and leakage result.
    assert word_hashes("hello  ").tolist() == [8858916992721591705]
    assert word_hashes("hellp").tolist() != [8858916992721591705]


def test_batches_over_the_code_point_budget_are_split_transparently(monkeypatch):
    import tuneforge.data.text as text

    texts = ["a b c", "d e", "", "f g h i"]
    whole = batch_word_hashes(texts)
    monkeypatch.setattr(text, "_BATCH_CODE_POINTS", 4)
    split = batch_word_hashes(texts)
    assert split[0].tolist() == whole[0].tolist() and split[1].tolist() == whole[1].tolist()


def test_copied_row_is_one_exact_pair_not_also_an_ngram_pair():
    # A verbatim copy matches on its prompt (exact) and on all its n-grams; it is one leak, reported once,
    # while a different training row sharing a long passage with the same item is still its own n-gram pair.
    copy = TRAIN[1]
    passage = chat("Another prompt entirely", " ".join(copy["messages"][1]["content"].split()[:30]))
    report = find_leakage({"train": TRAIN + [passage], "test": [copy]})
    assert [(p.kind, p.ref_index) for p in report.pairs] == [("exact", 1), ("ngram", 3)]
    assert report.leaked_items == {"test": 1}
