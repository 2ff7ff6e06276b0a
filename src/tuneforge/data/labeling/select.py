"""Active learning: which unlabelled rows are most worth labelling next, by model uncertainty and diversity.

    tuneforge data select pool.jsonl --model runs/my-run --budget 50 --labels positive,negative --out to_label.jsonl

Uncertainty, from the inference engine (nothing here calls model.generate):
  * label tasks (--labels): the label-token log-probabilities of `InferenceEngine.label_logprobs`, normalised over
    the label set; `entropy` is their entropy divided by log(K) (1 = no preference), `margin` is 1 - (p1 - p2)
    (1 = the two likeliest labels tie);
  * generation: the engine's greedy answer, then the mean entropy (nats) of the model's next-token distribution at
    every answer step, the step that ended the answer included (one forward pass over prompt + answer).

Diversity (Zhdanov 2019, "Diverse mini-batch active learning"): the `prefilter` x budget most uncertain rows are
embedded (MiniLM by default, tuneforge.rag.embed), clustered into `budget` groups by k-means weighted by
uncertainty, and each cluster gives the member nearest its centre. The budget then covers different kinds of
uncertain rows rather than fifty near-copies of the single most confusing one.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuneforge.errors import DataError


@dataclass
class PoolRow:
    index: int
    where: str
    row: dict
    item: dict          # {"messages": [...], "prompt": None} or {"messages": None, "prompt": "..."}
    text: str           # what is embedded for diversity


@dataclass
class Selection:
    rows: list[dict]                 # the chosen rows, most useful first, each with a "selection" record
    measure: str
    pool: int
    candidates: int
    clusters: int
    uncertainty: list[float] = field(default_factory=list)  # every pool row's, in pool order


def read_pool(path: str, prompt: str | None = None) -> list[PoolRow]:
    """Pool rows of any file type; the prompt is the --prompt template filled from the row, else the row's chat
    messages (before a trailing assistant turn), `prompt`, `instruction` (+ `input`) or `text`."""
    from tuneforge.data.formats import read_objects
    from tuneforge.data.text import template_fields

    if not Path(path).exists():
        raise DataError(f"{path}: no such pool file")
    fields = template_fields(prompt, "--prompt") if prompt else []
    rows, problems = [], []
    for k, (lineno, row) in enumerate(read_objects(Path(path), str(path))):
        where = f"{path}:{lineno}"
        missing = [f for f in fields if f not in row]
        if missing:
            problems.append(f"{where}: no field {', '.join(missing)} for --prompt")
            continue
        item = _item(row, prompt)
        if item is None:
            problems.append(f"{where}: no prompt: expected messages, prompt, instruction or text (or pass --prompt)")
            continue
        text = item["prompt"] if item["prompt"] is not None else "\n".join(
            str(m.get("content") or "") for m in item["messages"] if m["role"] != "system")
        rows.append(PoolRow(k, where, row, item, text))
    if problems:
        listed = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"{len(problems)} pool row(s) have no usable prompt:\n  " + "\n  ".join(listed))
    if not rows:
        raise DataError(f"{path}: the pool has no rows")
    return rows


def _item(row: dict, prompt: str | None) -> dict | None:
    if prompt:
        filled = prompt.format_map({k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()})
        return {"messages": [{"role": "user", "content": filled}], "prompt": None}
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        while messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        return {"messages": list(messages), "prompt": None} if messages else None
    if isinstance(row.get("prompt"), str):
        return {"messages": None, "prompt": row["prompt"]}
    if isinstance(row.get("instruction"), str):
        content = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return {"messages": [{"role": "user", "content": content}], "prompt": None}
    if isinstance(row.get("text"), str):
        return {"messages": [{"role": "user", "content": row["text"]}], "prompt": None}
    return None


# ------------------------------------------------------------------------------------------ uncertainty


def label_uncertainty(logprobs: Sequence[dict[str, float]], labels: list[str], measure: str) -> list[float]:
    """Per item, from {label: log p}: normalised entropy in [0, 1] or 1 - (p1 - p2), over the label set."""
    out = []
    for row in logprobs:
        logps = np.array([row[label] for label in labels], dtype=float)
        p = np.exp(logps - logps.max())
        p /= p.sum()
        if measure == "entropy":
            nonzero = p[p > 0]
            out.append(float(-(nonzero * np.log(nonzero)).sum() / math.log(len(labels))))
        elif measure == "margin":
            top = np.sort(p)[::-1]
            out.append(float(1.0 - (top[0] - top[1])))
        else:
            raise DataError(f"--measure {measure!r}: label tasks use entropy or margin")
    return out


def answer_entropy(engine, items: list[dict], *, max_new_tokens: int, batch_size: int = 8) -> list[float]:
    """Mean next-token entropy (nats) over the engine's greedy answer, the step that ended it included."""
    import torch

    from tuneforge.console import make_progress
    from tuneforge.models.inference import eval_mode, length_sorted_batches, right_pad, shifted_logits

    completions = engine.generate(items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  description="greedy answers (uncertainty)")
    prompts = [engine.prompt_ids(item) for item in items]
    # One placeholder token after the answer: shifted_logits drops the last position, and the prediction made after
    # the last answer token (the one that stopped, or the cut) belongs to the answer. Causal attention: the
    # placeholder changes no earlier prediction.
    rows = [(p + list(c.token_ids) + [0], [0] * (len(p) + len(c.token_ids) + 1)) for p, c in zip(prompts, completions)]
    out: list[float] = [math.nan] * len(rows)
    with make_progress(True) as bar, eval_mode(engine.model), torch.no_grad():
        task = bar.add_task("answer-token entropy", total=len(rows))
        for batch in length_sorted_batches([ids for ids, _ in rows], batch_size):
            input_ids, attention_mask, _ = right_pad([rows[i] for i in batch])
            logp = torch.log_softmax(shifted_logits(engine.model, input_ids, attention_mask).float(), -1)
            entropy = -(logp.exp() * logp).sum(-1)   # (batch, position): entropy of the prediction made there
            for row, index in enumerate(batch):
                start = len(prompts[index]) - 1     # the position predicting the first answer token
                out[index] = float(entropy[row, start:start + len(completions[index].token_ids) + 1].mean())
            bar.advance(task, len(batch))
    return out


# ------------------------------------------------------------------------------------------ diversity


def kmeans(vectors: np.ndarray, k: int, weights: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each vector, centres): scikit-learn's k-means, weighted."""
    import warnings

    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than k (duplicates): fewer clusters, handled below
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vectors, sample_weight=weights)
    return model.labels_, model.cluster_centers_


def select_rows(pool: list[PoolRow], uncertainty: list[float], *, budget: int, embedder=None, prefilter: int = 10,
                seed: int = 0, measure: str = "entropy") -> Selection:
    """The `budget` most useful rows: uncertain first, then one per k-means cluster of the uncertain candidates."""
    if budget <= 0:
        raise DataError(f"--budget must be positive, got {budget}")
    scores = np.array([-math.inf if math.isnan(u) else u for u in uncertainty], dtype=float)
    by_uncertainty = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    budget = min(budget, len(pool))
    clusters = {}
    if embedder is None or budget == len(pool):
        chosen = by_uncertainty[:budget]
        cluster_of = {}
    else:
        candidates = by_uncertainty[: max(budget, prefilter * budget)]
        vectors = np.asarray(embedder.embed([pool[i].text for i in candidates]), dtype=np.float64)
        weights = np.maximum(scores[candidates], 0) + 1e-6
        labels, centres = kmeans(vectors, budget, weights, seed)
        cluster_of = {i: int(c) for i, c in zip(candidates, labels)}
        chosen = []
        for c in sorted(set(labels.tolist())):
            members = [i for i, lab in zip(candidates, labels) if lab == c]
            clusters[c] = len(members)
            distance = {i: float(np.linalg.norm(vectors[candidates.index(i)] - centres[c])) for i in members}
            chosen.append(min(members, key=lambda i: (distance[i], -scores[i], i)))
        # Duplicate embeddings can leave fewer clusters than the budget: the most uncertain of the rest fill it.
        chosen += [i for i in candidates if i not in chosen][: budget - len(chosen)]
        chosen.sort(key=lambda i: (-scores[i], i))
    rows = []
    for rank, i in enumerate(chosen, 1):
        record = {"rank": rank, "uncertainty": None if math.isinf(scores[i]) else round(float(scores[i]), 6),
                  "measure": measure, "uncertainty_rank": by_uncertainty.index(i) + 1, "where": pool[i].where}
        if i in cluster_of:
            record.update(cluster=cluster_of[i], cluster_size=clusters.get(cluster_of[i], 0))
        rows.append({**pool[i].row, "selection": record})
    return Selection(rows, measure, len(pool), len(cluster_of) or len(pool), len(clusters),
                     [float(u) for u in uncertainty])
