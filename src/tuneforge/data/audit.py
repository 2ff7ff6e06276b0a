"""`data audit`: one pass over a dataset that answers "is this data fit to train on?".

Token lengths at scale: rendering a row with the chat template costs ~0.05 ms, but tokenising it through
`apply_chat_template(tokenize=True)` row by row, twice (with and without the assistant mask), costs
~1-2 ms - minutes for 100k rows. So lengths come from the fast tokenizer's batch encode of rendered texts
(`encode_batch`, ~0.3 ms for a 300-token row), in chunks so memory stays bounded (only per-row integers are
kept). Trained tokens per row come from a formula over batch-encoded pieces: for chat, the tokens of each
trained assistant message plus its end-of-turn token (what the training template marks); for
prompt_completion, the completion plus eos. The formula is checked against the real training render
(`render_example`) on a deterministic sample (`formula_check` in the report), and the rows that exceed
max length - the only ones whose loss changes - are rendered exactly, with and without truncation, to
measure the trained tokens truncation throws away (up to MAX_EXACT of them, an evenly spaced sample beyond
that, whose lost share is applied to the rest and flagged `truncation_loss_estimated`). The derived training
template is proven on a deterministic sample of rows plus every over-length row, not on all 100k
(`template.verified_rows`).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tuneforge.data.formats import CHAT_FORMATS, LoadedData, load_dataset_file
from tuneforge.data.text import chunked, progress_iter

_CHUNK = 2048
SAMPLE_ROWS = 200
MAX_LISTED = 200
MAX_EXACT = 1000  # pairs/clusters listed in audit.json; counts always cover everything


@dataclass
class Lengths:
    """Per-row token counts. `fields` holds per-field counts (e.g. prompt/completion) for the report."""

    total: np.ndarray
    trained: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)


def _content(value: Any) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


def _trained_after_content(tokenizer, template) -> int:
    """Trained tokens a template with its own {% generation %} markers adds after an answer's content (its
    end-of-turn, when the markers enclose it), measured on a probe: such a template does not say."""
    from tuneforge.data.render import render_example

    probe = {"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}
    try:
        out = render_example(probe, tokenizer, template, 1 << 20)
    except Exception:  # noqa: BLE001 - a template the probe cannot render fails later on real rows, with their line
        return 0
    return max(sum(out["assistant_masks"]) - len(tokenizer("pong", add_special_tokens=False)["input_ids"]), 0)


class TokenCounter:
    """Batch token counts for normalised rows of any format, matching what training renders."""

    def __init__(self, tokenizer, template=None) -> None:
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self.template = template
        self.eot = 1 if template is not None and template.end_of_turn else 0
        if template is not None and not template.derived:
            self.eot = _trained_after_content(tokenizer, template)
        self.eos = 1 if tokenizer.eos_token_id is not None else 0

    def _count(self, texts: list[str], specials: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.int64)
        return np.fromiter((len(e) for e in self.backend.encode_batch(texts, add_special_tokens=specials)),
                           dtype=np.int64, count=len(texts))

    def _render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        from tuneforge.data.chat_template import template_message

        plain = [template_message(m) for m in messages]
        return self.tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)

    def _prompt(self, prompts: list[Any]) -> np.ndarray:
        texts = [self._render(p, True) if isinstance(p, list) else p for p in prompts]
        conversational = [isinstance(p, list) for p in prompts]
        # Templates carry their own special tokens; plain prompts get the tokenizer's (as render.py does).
        with_specials = self._count(texts, True)
        without = self._count(texts, False)
        return np.where(conversational, without, with_specials)

    def _answer(self, answers: list[Any]) -> np.ndarray:
        # Conversational answers end with the end-of-turn token, plain ones with eos.
        extra = np.array([self.eot if isinstance(a, list) else self.eos for a in answers], dtype=np.int64)
        return self._count([_content(a) for a in answers]) + extra

    def count(self, rows: list[dict], fmt: str) -> Lengths:
        if fmt in CHAT_FORMATS:
            total = self._count([self._render(r["messages"]) for r in rows])
            pieces, owner = [], []
            for k, r in enumerate(rows):
                for m in r["messages"]:
                    if m["role"] == "assistant" and m.get("weight", 1) == 1:
                        pieces.append(m["content"])
                        owner.append(k)
            trained = np.bincount(np.asarray(owner, dtype=np.int64), weights=self._count(pieces) + self.eot,
                                  minlength=len(rows)).astype(np.int64)
            if self.template is not None:
                # Where a template puts tool calls is its own business, so the content formula cannot count them:
                # tool-call rows are rendered exactly (they are usually few).
                from tuneforge.data.render import render_example

                for k, r in enumerate(rows):
                    if any(m.get("tool_calls") for m in r["messages"]):
                        trained[k] = sum(render_example(r, self.tokenizer, self.template, 1 << 30)["assistant_masks"])
            return Lengths(total, trained, {"total": total, "trained": trained})
        if fmt == "text":
            total = self._count([r["text"] for r in rows], True) + self.eos
            return Lengths(total, total.copy(), {"text": total})
        prompt = self._prompt([r["prompt"] for r in rows])
        if fmt == "preference":
            chosen, rejected = self._answer([r["chosen"] for r in rows]), self._answer([r["rejected"] for r in rows])
            total = prompt + np.maximum(chosen, rejected)
            return Lengths(total, chosen + rejected, {"prompt": prompt, "chosen": chosen, "rejected": rejected})
        completion = self._answer([r["completion"] for r in rows])
        return Lengths(prompt + completion, completion.copy(), {"prompt": prompt, "completion": completion})


def count_lengths(data: LoadedData, counter: TokenCounter, progress: bool = False) -> Lengths:
    """Lengths of every row, chunk by chunk behind one progress bar."""
    # The CLI turns the tokenizer's thread pool off (it clashes with torch and fork during training); an audit
    # neither trains nor forks, and batch encoding is its slowest stage, so it uses every core here.
    with _tokenizer_parallelism():
        return _count_lengths(data, counter, progress)


@contextlib.contextmanager
def _tokenizer_parallelism():
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _count_lengths(data: LoadedData, counter: TokenCounter, progress: bool) -> Lengths:
    parts: list[Lengths] = []
    rows = progress_iter(data.rows, total=len(data.rows), description="tokenise", enabled=progress)
    for chunk in chunked(rows, _CHUNK):
        parts.append(counter.count(chunk, data.format))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Lengths(empty, empty)
    return Lengths(np.concatenate([p.total for p in parts]), np.concatenate([p.trained for p in parts]),
                   {k: np.concatenate([p.fields[k] for p in parts]) for k in parts[0].fields})


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0}
    # Interpolated percentiles of integer counts carry float noise (12344.099999999988); a tenth of a token is
    # already more precision than a length limit needs.
    p50, p95, p99 = (round(float(p), 1) for p in np.percentile(values, [50, 95, 99]))
    return {"count": int(values.size), "mean": round(float(values.mean()), 1), "p50": p50, "p95": p95,
            "p99": p99, "max": int(values.max()), "min": int(values.min())}


def histogram(values: np.ndarray, bins: int = 40) -> dict:
    if values.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values, bins=bins, range=(0, max(int(values.max()), 1)))
    return {"edges": [round(float(e), 1) for e in edges], "counts": counts.tolist()}


def _sample(n: int, k: int) -> list[int]:
    """Evenly spaced rows: deterministic, and it covers the whole file (files are often sorted by source)."""
    if n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k)})


def _renderable(fmt: str) -> bool:
    return fmt in CHAT_FORMATS + ("prompt_completion",)


def token_section(data: LoadedData, tokenizer, max_length: int, context: int | None, progress: bool) -> dict:
    from tuneforge.data.chat_template import prepare_training_template
    from tuneforge.data.render import render_example

    lines = data.line_numbers
    chat = data.format in CHAT_FORMATS
    template = None
    template_info: dict[str, Any] = {}
    if chat:
        # Proved on the sample first; over-length rows are proved below before their exact render.
        sample = _sample(len(data.rows), SAMPLE_ROWS)
        template = prepare_training_template(tokenizer, [data.rows[i] for i in sample],
                                             [data.where(i) for i in sample])
    if chat:
        from tuneforge.data.chat_template import check_tool_rendering

        # The template proof above saw a sample; every row with tool calls must render, not only sampled ones.
        check_tool_rendering(tokenizer, data.rows, [data.where(i) for i in range(len(data.rows))])
    counter = TokenCounter(tokenizer, template)
    lengths = count_lengths(data, counter, progress)
    over = np.flatnonzero(lengths.total > max_length)
    lost = 0
    exact_rows = 0
    over_rows: list[dict] = []
    estimated = False
    if _renderable(data.format):
        # Exact renders cost ~5 ms a row; past MAX_EXACT over-length rows, an evenly spaced sample is rendered
        # and its lost share of trained tokens is applied to the rest (reported as estimated).
        exact_idx = over if over.size <= MAX_EXACT else over[_sample(int(over.size), MAX_EXACT)]
        if chat and exact_idx.size:
            proof = [int(i) for i in exact_idx]
            template = prepare_training_template(tokenizer, [data.rows[i] for i in proof],
                                                 [data.where(i) for i in proof])
        sample_trained = 0
        for i in progress_iter(exact_idx.tolist(), total=int(exact_idx.size), description="truncation",
                               enabled=progress and exact_idx.size > 256):
            full = render_example(data.rows[i], tokenizer, template, 1 << 30)
            cut = render_example(data.rows[i], tokenizer, template, max_length)
            row_lost = sum(full["assistant_masks"]) - sum(cut["assistant_masks"])
            lost += row_lost
            sample_trained += sum(full["assistant_masks"])
            exact_rows += 1
            if len(over_rows) < MAX_LISTED:
                over_rows.append({"line": lines[i], "tokens": len(full["input_ids"]), "trained_tokens_lost": row_lost})
        if exact_idx.size < over.size:
            estimated = True
            lost = round(lost / max(sample_trained, 1) * int(lengths.trained[over].sum()))
        check = _formula_check(data, tokenizer, template, lengths)
    else:
        # Formats rendered by their own trainers (DPO/KTO/CPT): trained tokens past max_length are lost.
        prompt = lengths.fields.get("prompt", np.zeros_like(lengths.total))
        kept = np.minimum(lengths.trained, np.maximum(0, max_length - prompt))
        if data.format == "preference":
            room = np.maximum(0, max_length - prompt)
            kept = np.minimum(lengths.fields["chosen"], room) + np.minimum(lengths.fields["rejected"], room)
        lost = int((lengths.trained - kept)[over].sum())
        over_rows = [{"line": lines[i], "tokens": int(lengths.total[i]),
                      "trained_tokens_lost": int((lengths.trained - kept)[i])}
                     for i in over[:MAX_LISTED].tolist()]
        check = None
    if template is not None:
        template_info = {"derived": template.derived, "strategy": template.strategy,
                         "verified_rows": template.verified_rows,
                         "verified_on": "deterministic sample + over-length rows"}
    trained_total = int(lengths.trained.sum())
    total_tokens = int(lengths.total.sum())
    return {
        "max_length": max_length,
        "context_window": context,
        "fields": {name: _stats(values) for name, values in lengths.fields.items()},
        "histogram": histogram(lengths.total),
        "tokens": total_tokens,
        "trained_tokens": trained_total,
        "trained_token_ratio": round(trained_total / total_tokens, 4) if total_tokens else 0.0,
        "over_max_length": int(over.size),
        "over_context_window": int((lengths.total > context).sum()) if context else None,
        "trained_tokens_lost_to_truncation": int(lost),
        "lost_trained_share": round(lost / trained_total, 6) if trained_total else 0.0,
        "truncated_rows_rendered_exactly": exact_rows,
        "truncation_loss_estimated": estimated,
        "truncated_rows": over_rows,
        "no_trained_tokens": int((lengths.trained == 0).sum()),
        "formula_check": check,
        "template": template_info,
    }


def _formula_check(data: LoadedData, tokenizer, template, lengths: Lengths) -> dict:
    """Compare the batch formula with the real training render on a deterministic sample."""
    from tuneforge.data.render import render_example

    sample = _sample(len(data.rows), SAMPLE_ROWS)
    mismatches: list[int] = []
    worst = 0
    for i in sample:
        r = render_example(data.rows[i], tokenizer, template, 1 << 30)
        diff = max(abs(len(r["input_ids"]) - int(lengths.total[i])),
                   abs(sum(r["assistant_masks"]) - int(lengths.trained[i])))
        if diff:
            mismatches.append(data.line_numbers[i])
            worst = max(worst, diff)
    return {"rows": len(sample), "mismatches": len(mismatches), "max_abs_diff": worst, "lines": mismatches[:20]}


# -------------------------------------------------------------------------------------------- the audit


@dataclass
class AuditInputs:
    train: str
    format: str = "auto"
    validation: str | None = None
    test: str | None = None
    eval_files: list[str] = field(default_factory=list)
    model: str | None = None
    max_length: int = 2048
    near_threshold: float = 0.8
    ngram: int = 13
    # A pair sharing a few 13-grams (a common instruction) is not a leak; half an eval item's n-grams is.
    # Low on purpose: a copied passage of a few sentences is contamination even inside a long item.
    leak_min_share: float = 0.1
    label_field: str | None = None
    # Class balance by cohort: a field naming each row's cohort, else cohorts detected from a swap list's terms.
    cohort_field: str | None = None
    swaps: str | None = None


def _timed(timings: dict, name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        timings[name] = round(time.perf_counter() - start, 3)


def _label_balance(data: LoadedData, label_field: str | None) -> dict | None:
    from tuneforge.data.split import _MISSING, get_field

    if label_field is None:
        if data.format == "kto":
            label_field = "label"
        elif any("label" in (r.get("meta") or {}) for r in data.rows):
            label_field = "meta.label"
        else:
            return None
    counts: dict[str, int] = {}
    missing: list[int] = []
    for i, row in enumerate(data.rows):
        value = get_field(row, label_field)
        if value is _MISSING:
            missing.append(data.line_numbers[i])
            continue
        key = value if isinstance(value, str) else __import__("json").dumps(value)
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    return {"field": label_field, "counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "shares": ({k: round(v / total, 4) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
                       if total else {}),
            "missing": len(missing), "missing_lines": missing[:20]}


def run_audit(inputs: AuditInputs, *, progress: bool = False, tokenizer=None, context: int | None = None) -> dict:
    """The full audit as a JSON-able dict. `tokenizer`/`context` override loading `inputs.model`."""
    from tuneforge.data.dedup import find_duplicates
    from tuneforge.data.leakage import find_leakage
    from tuneforge.data.pii import scan_rows

    timings: dict[str, float] = {}
    splits: dict[str, LoadedData] = {}
    splits["train"] = _timed(timings, "load", lambda: load_dataset_file(inputs.train, inputs.format, progress=progress))
    for name, path in (("validation", inputs.validation), ("test", inputs.test)):
        if path:
            splits[name] = load_dataset_file(path, inputs.format)
    for k, path in enumerate(inputs.eval_files):
        splits[f"eval{k + 1}:{path}"] = load_dataset_file(path)
    train = splits["train"]
    label_field = inputs.label_field
    if label_field is not None:
        from tuneforge.data.split import resolve_field

        # Resolved before the slow stages, so a misspelt field fails in a second, not after tokenising.
        label_field = resolve_field(train.rows, label_field, "--label-field of the audit")
    report: dict[str, Any] = {
        "sources": {name: {"path": d.path, "format": d.format, "file_type": d.file_type, "rows": len(d),
                           "sha256": d.sha256}
                    for name, d in splits.items()},
    }
    if tokenizer is None and inputs.model:
        def load():
            from transformers import AutoConfig

            from tuneforge.models.loading import context_window, load_tokenizer
            from tuneforge.models.sources import resolve_model

            resolved = resolve_model(inputs.model)
            return load_tokenizer(resolved), context_window(AutoConfig.from_pretrained(resolved.path))
        tokenizer, context = _timed(timings, "load model", load)
    report["model"] = inputs.model
    if tokenizer is not None:
        report["tokens"] = _timed(timings, "tokens",
                                  lambda: token_section(train, tokenizer, inputs.max_length, context, progress))
    dedup = _timed(timings, "duplicates", lambda: find_duplicates(
        train.rows, train.line_numbers, threshold=inputs.near_threshold, progress=progress))
    report["duplicates"] = {
        "exact_groups": len(dedup.exact), "exact_extra_rows": sum(len(g.indices) - 1 for g in dedup.exact),
        "near_clusters": len(dedup.near), "near_extra_rows": sum(len(c.members) - 1 for c in dedup.near),
        "threshold": inputs.near_threshold,
        "exact": [{"lines": g.lines} for g in dedup.exact[:MAX_LISTED]],
        "near": [{"lines": c.lines, "similarity": round(c.similarity, 3)} for c in dedup.near[:MAX_LISTED]],
    }
    report["conflicts"] = {"groups": len(dedup.conflicts),
                           "items": [{"lines": g.lines, "distinct_answers": g.distinct_answers}
                                     for g in dedup.conflicts[:MAX_LISTED]]}
    pii = _timed(timings, "pii", lambda: scan_rows(train.rows, train.line_numbers, progress=progress))
    report["pii"] = {"rows_scanned": pii.rows_scanned, "rows_with_pii": pii.rows_with_pii,
                     "counts": dict(sorted(pii.counts.items())),
                     # Every string/integer of each row is scanned, meta included; field -> rows having it.
                     "fields_scanned": dict(sorted(pii.fields_scanned.items())),
                     "by_field": {f: dict(sorted(c.items())) for f, c in sorted(pii.by_field.items())},
                     "examples": {t: [{"line": f.line, "field": f.field, "masked": f.masked} for f in ex]
                                  for t, ex in sorted(pii.examples.items())}}
    if len(splits) > 1:
        leak = _timed(timings, "leakage", lambda: find_leakage(
            {k: v.rows for k, v in splits.items()}, {k: v.line_numbers for k, v in splits.items()},
            n=inputs.ngram, min_share=inputs.leak_min_share, progress=progress))
        report["leakage"] = {"ngram": leak.n, "min_share": inputs.leak_min_share, "exact_pairs": len(leak.exact),
                             "ngram_pairs": len(leak.ngram),
                             "leaked_items": leak.leaked_items, "boilerplate_ngrams": leak.boilerplate_ngrams,
                             "pairs": [{"kind": p.kind, "ref_split": p.ref_split, "ref_line": p.ref_line,
                                        "eval_split": p.eval_split, "eval_line": p.eval_line, "share": p.share}
                                       for p in leak.pairs[:MAX_LISTED]]}
    report["label_balance"] = _label_balance(train, label_field)
    from tuneforge.data.fairness.cohorts import cohort_balance
    from tuneforge.data.fairness.swaps import load_swaps

    balance_field = report["label_balance"]["field"] if report["label_balance"] else None
    report["cohort_balance"] = _timed(timings, "cohorts", lambda: cohort_balance(
        train, balance_field, cohort_field=inputs.cohort_field,
        swaps=None if inputs.cohort_field else load_swaps(inputs.swaps)))
    report["timings_s"] = timings
    return report
