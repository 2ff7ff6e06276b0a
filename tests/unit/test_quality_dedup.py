"""Exact duplicates, near duplicates (MinHash LSH) and conflicting examples, with line numbers."""
from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash

from tests.unit.near_dup_fixture import pair_scores, planted_set
from tuneforge.data.dedup import (
    ConflictGroup,
    DuplicateGroup,
    _MinHasher,
    conflicts,
    edit_distance,
    exact_duplicates,
    find_duplicates,
    near_duplicates,
    similarity,
)
from tuneforge.data.text import normalize


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "meta": {}}


def passage(tag: str, n: int = 100) -> list[str]:
    """n distinct words unique to `tag`: passages with different tags share no shingle."""
    return [f"{tag}{k}" for k in range(n)]


def test_normalize_folds_case_width_whitespace_and_optionally_punctuation():
    assert normalize("  Ｈello\u00a0\tWORLD \n") == "hello world"  # NFKC folds the full-width H
    assert normalize("Straße") == normalize("STRASSE")
    assert normalize("Hello, world!") == "hello, world!"
    assert normalize("Hello, world!", ignore_punctuation=True) == "hello world"
    assert normalize("a,b", ignore_punctuation=True) == normalize("a b", ignore_punctuation=True)


def test_exact_duplicates_groups_with_lines():
    rows = [
        chat("What is 2+2?", "4"),
        chat("Capital of France?", "Paris"),
        chat("  what IS 2+2? ", "4"),  # case + whitespace
        chat("Capital of Spain?", "Madrid"),
        chat("What is 2+2?", "4"),
        chat("capital of france", "paris."),  # differs only by punctuation
    ]
    lines = [1, 3, 5, 7, 9, 11]
    assert exact_duplicates(rows, lines) == [DuplicateGroup([0, 2, 4], [1, 5, 9])]
    assert exact_duplicates(rows, lines, ignore_punctuation=True) == [
        DuplicateGroup([0, 2, 4], [1, 5, 9]),
        DuplicateGroup([1, 5], [3, 11]),
    ]


def test_roles_distinguish_rows_with_the_same_words():
    rows = [chat("hello", "hi"), {"messages": [{"role": "assistant", "content": "hello"},
                                                {"role": "user", "content": "hi"}]}]
    assert exact_duplicates(rows) == []


def _near_rows():
    a, b, c = passage("alpha"), passage("beta"), passage("gamma")
    a_edit = list(a)
    a_edit[50] = "CHANGED"  # one word in the middle: 5 of 96 shingles differ, Jaccard 91/101
    b_tail = b[:-1] + ["end"]  # last word only: Jaccard 95/97
    return [
        chat(" ".join(a[:20]), " ".join(a[20:])),  # 0
        chat(" ".join(b[:20]), " ".join(b[20:])),  # 1
        chat(" ".join(c[:20]), " ".join(c[20:])),  # 2
        chat(" ".join(a_edit[:20]), " ".join(a_edit[20:])),  # 3 ~ 0
        chat(" ".join(b_tail[:20]), " ".join(b_tail[20:])),  # 4 ~ 1
        chat(" ".join(a[:20]), " ".join(a[20:60])),  # 5: first 60 words of 0, Jaccard ~0.57
    ]


def test_near_duplicates_exact_clusters_and_lines():
    rows = _near_rows()
    clusters = near_duplicates(rows, [2, 4, 6, 8, 10, 12], threshold=0.8)
    assert [(c.representative, c.members, c.lines) for c in clusters] == [
        (0, [0, 3], [2, 8]),
        (1, [1, 4], [4, 10]),
    ]
    assert clusters[0].representative_line == 2
    # MinHash estimates of the true Jaccard values (0.90 and 0.98) at 128 permutations.
    assert 0.8 <= clusters[0].similarity < 1.0 and clusters[1].similarity >= 0.9


def test_near_duplicates_threshold_and_ignore():
    rows = _near_rows()
    # Row 5 (a truncated copy of 0) joins only at a threshold below its Jaccard.
    loose = near_duplicates(rows, threshold=0.5)
    assert [c.members for c in loose] == [[0, 3, 5], [1, 4]]
    assert [c.members for c in near_duplicates(rows, ignore=[3])] == [[1, 4]]


def test_near_duplicates_is_deterministic_and_seeded():
    rows = _near_rows()
    first = near_duplicates(rows, threshold=0.5)
    assert near_duplicates(rows, threshold=0.5) == first
    assert [c.members for c in near_duplicates(rows, threshold=0.5, seed=7)] == [
        c.members for c in first
    ]


def test_one_word_variants_of_short_rows_are_found_at_the_default_threshold():
    # Issue 13: word 5-gram shingles broke on one changed word, so these were missed even at 0.5.
    thirteen = {"text": "The quick brown fox jumps over the lazy dog near the old river bank"}
    variant = {"text": "The quick brown fox jumps over the lazy cat near the old river bank"}
    ticket = chat("My order 4417 arrived damaged and the box was crushed, please send a replacement today",
                  "Sorry, a replacement is on its way.")
    ticket_variant = chat("My order 4417 arrived broken and the box was crushed, please send a replacement today",
                          "Sorry, a replacement is on its way.")
    other = chat("How do I change the email address on my account?", "Open Settings, then Account.")
    rows = [thirteen, ticket, other, variant, ticket_variant]
    clusters = near_duplicates(rows)
    assert [(c.members, c.similarity) for c in clusters] == [([0, 3], round(1 - 1 / 14, 4)),
                                                             ([1, 4], round(1 - 1 / 24, 4))]
    assert [c.members for c in near_duplicates(rows, threshold=0.5)] == [[0, 3], [1, 4]]


def test_planted_set_precision_and_recall():
    # Tiny (13-17 words), short and long rows of one topic, with planted one- and two-word variants.
    rows, groups, kinds = planted_set()
    scores = pair_scores(near_duplicates(rows), groups, kinds)
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.95, scores
    assert all(recall >= 0.95 for recall, _ in scores["recall_by_kind"].values()), scores
    assert {k for k in scores["recall_by_kind"]} == {"tiny/1", "tiny/2", "short/1", "short/2", "long/1", "long/2"}


def test_similarity_is_the_share_of_words_that_line_up():
    a = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert similarity(a, a) == 1.0
    assert similarity(a, a[:9] + ["x"]) == 0.9
    assert similarity(a, a[:5] + ["x"] + a[5:]) == 1 - 1 / 11  # one insertion
    # A reordered block keeps the words and most 5-grams: the 5-gram Jaccard speaks for it.
    long = [f"w{k}" for k in range(60)]
    swapped = long[30:] + long[:30]
    assert edit_distance(long, swapped) == 60 and similarity(long, swapped) == 52 / 60
    assert similarity(["a"], ["b"]) == 0.0 and similarity([], []) == 1.0


def test_edit_distance_matches_the_textbook_table():
    import random

    def table(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]

    rng = random.Random(0)
    for _ in range(300):
        a = rng.choices("abcd", k=rng.randint(0, 90))
        b = rng.choices("abcd", k=rng.randint(0, 90))
        assert edit_distance(a, b) == table(a, b)


def test_members_are_near_duplicates_of_their_representative_not_of_each_other():
    # A chain: each row differs from the previous one by two words, so A and C differ by four.
    base = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    b = base[:2] + ["x", "y"] + base[4:]
    c = b[:6] + ["z", "w"] + b[8:]
    rows = [{"text": " ".join(t)} for t in (base, b, c)]
    clusters = near_duplicates(rows)
    assert [(cl.members, cl.similarities) for cl in clusters] == [([0, 1], [1.0, 0.8])]


def test_shared_system_prompts_do_not_make_rows_similar():
    system = " ".join(f"rule{k}" for k in range(150))
    rows = [chat(f"question {k} about topic {k * 7}", f"answer number {k} is {k * 3} units", system=system)
            for k in range(4)]
    assert near_duplicates(rows) == []
    # The same conversation under the shared prompt is still a near duplicate.
    rows.append(chat("question 1 about topic 8", "answer number 1 is 3 units", system=system))
    assert [c.members for c in near_duplicates(rows)] == [[1, 4]]


def test_scripts_without_spaces_compare_characters():
    rows = [{"text": "我的订单还没有到达请帮我查一下物流信息谢谢"},
            {"text": "我的订单还没有到达请帮我查一下快递信息谢谢"},
            {"text": "今天天气很好我们去公园散步吧"}]
    assert [c.members for c in near_duplicates(rows)] == [[0, 1]]


def test_vectorised_minhash_matches_datasketch_per_element():
    # The fast path passes a whole array as one batch item; it must equal datasketch's own result.
    template = MinHash(num_perm=64, seed=3)
    hasher = _MinHasher(64, 3, template.permutations, template.scheme)
    values = np.array([1, 99, 12345, 2**32 - 1, 7], dtype=np.uint32)
    first = hasher(values)
    assert hasher.vectorised is True
    reference = MinHash(num_perm=64, seed=3, hashfunc=lambda v: v)
    reference.update_batch(values.tolist())
    np.testing.assert_array_equal(first.hashvalues, reference.hashvalues)
    np.testing.assert_array_equal(hasher(values).hashvalues, reference.hashvalues)


def test_conflicts_same_prompt_different_answers():
    rows = [
        chat("Is the earth flat?", "No."),
        chat("is the earth flat?", "Yes."),
        chat("Is the earth flat?", "no."),  # same answer as row 0 once normalised
        chat("Is water wet?", "Yes."),
        chat("Is water wet?", "Yes."),  # duplicate, not a conflict
        chat("Is the earth flat?", "Yes.", system="You are a flat-earther."),  # other prompt
        {"text": "plain pretraining text", "meta": {}},
    ]
    assert conflicts(rows, [10, 11, 12, 13, 14, 15, 16]) == [
        ConflictGroup([0, 1, 2], [10, 11, 12], 2)
    ]


def test_find_duplicates_reports_each_copy_once_and_rows_to_drop():
    rows = _near_rows() + [_near_rows()[2]]  # row 6: exact copy of row 2
    report = find_duplicates(rows)
    assert report.exact == [DuplicateGroup([2, 6], [3, 7])]
    assert [c.members for c in report.near] == [[0, 3], [1, 4]]
    # Near copies that edit only the answer also share their prompt: they are conflicts too.
    assert report.conflicts == [ConflictGroup([0, 3, 5], [1, 4, 6], 3), ConflictGroup([1, 4], [2, 5], 2)]
    assert report.rows_to_drop() == [3, 4, 6]


def test_prompt_completion_rows_and_line_validation():
    rows = [{"prompt": "Q1", "completion": "A"}, {"prompt": "q1", "completion": "B"}]
    assert conflicts(rows) == [ConflictGroup([0, 1], [1, 2], 2)]
    assert exact_duplicates(rows, on="prompt") == [DuplicateGroup([0, 1], [1, 2])]
    with pytest.raises(ValueError, match="line_numbers has 1 entries for 2 rows"):
        exact_duplicates(rows, [1])


def test_vectorised_banding_finds_the_pairs_datasketch_lsh_finds():
    from datasketch import MinHashLSH

    from tuneforge.data.dedup import _candidate_pairs

    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(60, 32), dtype=np.uint64).astype(np.uint32)
    sigs[5, :8] = sigs[2, :8]  # share band 0
    sigs[9, 24:] = sigs[2, 24:]  # share band 3
    sigs[40] = sigs[41]  # share every band
    sigs[50, 8:16] = sigs[51, 8:16]
    sigs[52, 8:16] = sigs[51, 8:16]  # a bucket of three
    lsh = MinHashLSH(num_perm=32, params=(4, 8))
    minhashes = [MinHash(num_perm=32, hashvalues=s, scheme="affine32") for s in sigs]
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    expected = sorted({(min(i, j), max(i, j)) for i, m in enumerate(minhashes)
                       for j in lsh.query(m) if j != i})
    ours = [tuple(p) for p in _candidate_pairs(sigs, 4, 8).tolist()]
    assert ours == expected == [(2, 5), (2, 9), (40, 41), (50, 51), (50, 52), (51, 52)]
