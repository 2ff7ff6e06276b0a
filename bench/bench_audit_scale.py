"""Scale benchmark for the data-audit engines: exact dedup, near-dup LSH, PII scan, 13-gram leakage.

    .venv/bin/python bench/bench_audit_scale.py [--rows 100000] [--eval 1000] [--progress]

Generates chat rows of ~300 tokens (~225 words) deterministically, plants known problems, times
each stage, checks the planted problems were found, and prints rows/s, total seconds and peak RSS.
Budget: the whole `tuneforge data audit` (these stages plus tokenisation) must stay under 2 minutes
on 2 CPU cores, so these stages should total well under ~60 s.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tuneforge.data.dedup import exact_duplicates, near_duplicates  # noqa: E402
from tuneforge.data.leakage import find_leakage  # noqa: E402
from tuneforge.data.pii import scan_rows  # noqa: E402

SYSTEM = "You are a helpful assistant."
PII_SNIPPETS = (
    "write to alice.smith{k}@example.org for details",
    "my card is 4111 1111 1111 1111 please charge it",
    "call me on +44 20 7946 0{k:03d}",
    "server at 10.0.{a}.{b} is down",
    "my ssn is 123-45-{k:04d}",
    "use key AKIAIOSFODNN7EXAMPL{c}",
)


def _vocab(rng: np.random.Generator, size: int = 30000) -> list[str]:
    """Whole English-like words of SmolLM2's vocabulary (one token each with a leading space), so a row of
    ~225 words renders to ~300 tokens as real chat text does; random letter strings would split into ~4 tokens
    a word and make the benchmark measure tokenising 3x more text than it claims."""
    import json
    from pathlib import Path

    tokenizer_json = Path(__file__).resolve().parents[1] / "tests/fixtures/smollm2-tokenizer/tokenizer.json"
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    words = sorted(t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower()
                   and len(t) > 3)
    picked = rng.choice(len(words), size=min(size, len(words)), replace=False)
    return [words[i] for i in sorted(picked)]


def _words(rng: np.random.Generator, vocab: list[str], probs: np.ndarray, n: int) -> list[str]:
    return [vocab[i] for i in rng.choice(len(vocab), n, p=probs)]


def make_rows(n_rows: int, n_eval: int, seed: int = 0):
    """Rows plus the ground truth of what was planted (row indices)."""
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    # Zipf-like word frequencies, as in natural text: common words repeat across rows, so shingles
    # are not trivially unique.
    probs = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    probs /= probs.sum()
    ids = rng.choice(len(vocab), size=(n_rows + n_eval, 225), p=probs)

    def row_from(words: list[str]) -> dict:
        return {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": " ".join(words[:60]) + "?"},
                {"role": "assistant", "content": " ".join(words[60:])},
            ],
            "meta": {},
        }

    rows = [row_from([vocab[i] for i in ids[r]]) for r in range(n_rows)]
    evals = [row_from([vocab[i] for i in ids[n_rows + r]]) for r in range(n_eval)]
    truth = {"exact": [], "near": [], "pii": [], "leak": []}
    # 1% exact copies (case/whitespace changed: must still match after normalisation).
    for k in range(n_rows // 100):
        src, dst = int(rng.integers(0, n_rows // 2)), n_rows // 2 + 2 * k
        copy = row_from(rows[src]["messages"][1]["content"].rstrip("?").split()
                        + rows[src]["messages"][2]["content"].split())
        copy["messages"][2]["content"] = "  " + copy["messages"][2]["content"].upper()
        rows[dst] = copy
        truth["exact"].append((src, dst))
    # 1% near copies: three words substituted in the answer.
    for k in range(n_rows // 100):
        src, dst = int(rng.integers(0, n_rows // 2)), n_rows // 2 + 2 * k + 1
        answer = rows[src]["messages"][2]["content"].split()
        for pos in rng.choice(len(answer), 3, replace=False):
            answer[pos] = "edited"
        near = row_from(rows[src]["messages"][1]["content"].rstrip("?").split() + answer)
        rows[dst] = near
        truth["near"].append((src, dst))
    # 0.6% rows with PII.
    # PII goes into rows outside the planted pairs, so it cannot break a planted duplicate.
    planted = {i for pairs in (truth["exact"], truth["near"]) for pair in pairs for i in pair}
    for k in range(n_rows * 6 // 1000):
        r = int(rng.integers(0, n_rows))
        while r in planted:
            r = int(rng.integers(0, n_rows))
        snippet = PII_SNIPPETS[k % len(PII_SNIPPETS)].format(
            k=k % 1000, a=k % 250, b=(k * 7) % 250, c=chr(65 + k % 26)
        )
        rows[r]["messages"][2]["content"] += " " + snippet
        truth["pii"].append(r)
    # 2% of eval items copy a 40-word passage of a training answer (contamination).
    for k in range(n_eval // 50):
        src = int(rng.integers(0, n_rows // 2))
        passage = rows[src]["messages"][2]["content"].split()[10:50]
        evals[k]["messages"][2]["content"] = " ".join(passage)
        truth["leak"].append((k, src))
    return rows, evals, truth


def _rss_mib() -> float:
    """Peak RSS so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # not Linux: fall back to the peak
        return _rss_mib()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    rows, evals, truth = make_rows(args.rows, args.eval)
    words = sum(len(m["content"].split()) for r in rows[:1000] for m in r["messages"]) / 1000
    print(f"generated {len(rows):,} rows + {len(evals):,} eval rows (~{words:.0f} words/row) "
          f"in {time.perf_counter() - t0:.1f}s; RSS now {_current_rss_mib():.0f} MiB, "
          f"peak {_rss_mib():.0f} MiB (generation temporaries)")

    timings: dict[str, float] = {}
    cpu_times: dict[str, float] = {}

    def stage(name: str, n: int, fn):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        dt, dcpu = time.perf_counter() - start, time.process_time() - cpu
        timings[name] = dt
        cpu_times[name] = dcpu
        # CPU time is printed too: on a shared machine wall time includes waiting for a core.
        print(f"{name:<16} {dt:7.2f} s wall {dcpu:7.2f} s cpu  {n / dt:10,.0f} rows/s   "
              f"peak RSS {_rss_mib():,.0f} MiB, now {_current_rss_mib():,.0f} MiB")
        return result

    exact = stage("exact dedup", len(rows), lambda: exact_duplicates(rows, progress=args.progress))
    extra = [i for g in exact for i in g.indices[1:]]
    near = stage("near-dup LSH", len(rows),
                 lambda: near_duplicates(rows, ignore=extra, progress=args.progress))
    pii = stage("PII scan", len(rows), lambda: scan_rows(rows, progress=args.progress))
    leak = stage("13-gram leakage", len(rows) + len(evals),
                 lambda: find_leakage({"train": rows, "test": evals}, progress=args.progress))
    total = sum(timings.values())
    print(f"{'total':<16} {total:7.2f} s wall {sum(cpu_times.values()):7.2f} s cpu  "
          f"{len(rows) / total:10,.0f} rows/s   peak RSS {_rss_mib():,.0f} MiB")

    # Recall of what was planted (the bench doubles as an end-to-end sanity check at scale).
    exact_pairs = {(g.indices[0], i) for g in exact for i in g.indices[1:]}
    found_exact = sum((s, d) in exact_pairs for s, d in truth["exact"])
    near_sets = [set(c.members) for c in near]
    found_near = sum(any({s, d} <= m for m in near_sets) for s, d in truth["near"])
    found_pii = len(set(truth["pii"]) & set(pii.rows))
    leak_pairs = {(p.eval_index, p.ref_index) for p in leak.pairs}
    found_leak = sum(pair in leak_pairs for pair in truth["leak"])
    print(f"found: exact {found_exact}/{len(truth['exact'])} (groups {len(exact)}), "
          f"near {found_near}/{len(truth['near'])} (clusters {len(near)}), "
          f"PII rows {found_pii}/{len(set(truth['pii']))} (rows flagged {pii.rows_with_pii}, "
          f"{dict(pii.counts)}), leaked eval items {found_leak}/{len(truth['leak'])} "
          f"(pairs {len(leak.pairs)})")


if __name__ == "__main__":
    main()
