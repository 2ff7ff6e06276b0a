"""Exact duplicates, near duplicates (MinHash LSH) and conflicting examples, with line numbers."""
from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash

from tuneforge.data.dedup import (
    ConflictGroup,
    DuplicateGroup,
    _MinHasher,
    conflicts,
    exact_duplicates,
    find_duplicates,
    near_duplicates,
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


def test_near_duplicates_char_shingles_catch_short_edits():
    rows = [chat("Translate: good morning", "Buenos dias"),
            chat("Translate: good morning!", "Buenos días"),
            chat("Summarise the article", "It is about cats")]
    # Word 5-grams of such short rows barely overlap; character 5-grams do.
    assert near_duplicates(rows, threshold=0.6) == []
    assert [c.members for c in near_duplicates(rows, threshold=0.6, shingle="char")] == [[0, 1]]


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
