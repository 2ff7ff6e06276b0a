"""Production prompts vs training data (`tuneforge monitor drift`): is the server asked what the model was trained on?

- length shift: two-sample Kolmogorov-Smirnov statistic of prompt lengths (words), plus the means;
- novelty: share of production prompts of which fewer than half of the word 3-grams occur anywhere in training.

- embedding shift (when an embedding model is given, by default the bundled MiniLM `all-minilm-l6-v2` of rag/):
  cosine distance between the two sets' mean embeddings, and the squared maximum mean discrepancy (RBF kernel,
  median-distance bandwidth) with a permutation p-value: a shift in *what* is asked even when lengths and words
  look alike.

The HTML report holds the length chart (inline SVG); the alert decides the command's exit code.
"""
from __future__ import annotations

import html
import io
import json
import re
from dataclasses import asdict, dataclass

from tuneforge.data.text import prompt_text
from tuneforge.errors import DataError

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class DriftResult:
    production_prompts: int
    training_prompts: int
    mean_words_production: float
    mean_words_training: float
    length_ks: float
    length_ks_pvalue: float
    novel_share: float
    alert: bool
    reasons: list[str]
    embedding_shift: dict | str = "not computed: no embedding model given"


def logged_prompts(rows: list[dict]) -> list[str]:
    """Prompt texts of the successful requests of a request log (chat message lists or raw prompts)."""
    out = []
    for row in rows:
        if row.get("status") != 200 or not row.get("prompt"):
            continue
        if row["prompt"].startswith("enc:"):
            raise DataError("the request log is encrypted", hint="pass the serve config or run (it names the key "
                                                                  "file) instead of the .db file")
        value = json.loads(row["prompt"])
        out.append(prompt_text({"messages": value} if isinstance(value, list) else {"prompt": value}))
    return out


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def compare(production: list[str], training: list[str], *, max_ks: float = 0.3, max_novel_share: float = 0.5,
            embedder=None, max_embedding_distance: float = 0.05) -> tuple[DriftResult, list[int], list[int]]:
    """The drift result and the two length samples (for the chart); `embedder` (rag.embed.Embedder or anything
    with .embed(texts) -> unit vectors) adds the embedding shift."""
    from scipy.stats import ks_2samp

    if not production or not training:
        raise ValueError(f"drift needs prompts on both sides (production {len(production)}, "
                         f"training {len(training)})")
    prod_words = [_words(p) for p in production]
    train_words = [_words(t) for t in training]
    known = set().union(*(_trigrams(w) for w in train_words))
    novel = 0
    for words in prod_words:
        grams = _trigrams(words)
        if not grams or sum(g in known for g in grams) / len(grams) < 0.5:
            novel += 1
    prod_len, train_len = [len(w) for w in prod_words], [len(w) for w in train_words]
    ks = ks_2samp(prod_len, train_len)
    reasons = []
    if ks.statistic > max_ks:
        reasons.append(f"prompt length distribution shifted (KS {ks.statistic:.2f} > {max_ks})")
    share = novel / len(production)
    if share > max_novel_share:
        reasons.append(f"{share:.0%} of production prompts are n-gram novel (> {max_novel_share:.0%})")
    shift: dict | str = "not computed: no embedding model given"
    if embedder is not None:
        shift, reason = embedding_shift(production, training, embedder, max_distance=max_embedding_distance)
        if reason:
            reasons.append(reason)
    return DriftResult(len(production), len(training), round(sum(prod_len) / len(prod_len), 2),
                       round(sum(train_len) / len(train_len), 2), round(float(ks.statistic), 4),
                       round(float(ks.pvalue), 4), round(share, 4), bool(reasons), reasons,
                       shift), prod_len, train_len


def embedding_shift(production: list[str], training: list[str], embedder, *, max_distance: float = 0.05,
                    alpha: float = 0.01, sample: int = 500, permutations: int = 200,
                    seed: int = 0) -> tuple[dict, str | None]:
    """({model, centroid_cosine_distance, mmd2, mmd_pvalue, ...}, alert reason or None).

    Alert when the mean embeddings are further apart than `max_distance` (cosine distance) AND the MMD permutation
    test says the difference is not sampling noise (p < alpha). At most `sample` prompts per side are embedded."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(texts: list[str]) -> list[str]:
        if len(texts) <= sample:
            return texts
        return [texts[i] for i in sorted(rng.choice(len(texts), sample, replace=False))]

    prod, train = embedder.embed(pick(production)), embedder.embed(pick(training))
    distance = centroid_distance(prod, train)
    mmd2, pvalue = mmd_test(prod, train, permutations=permutations, seed=seed)
    out = {"model": getattr(embedder, "name", type(embedder).__name__), "production_embedded": len(prod),
           "training_embedded": len(train), "centroid_cosine_distance": round(distance, 4),
           "mmd2": round(mmd2, 5), "mmd_pvalue": round(pvalue, 4), "max_distance": max_distance, "alpha": alpha}
    reason = None
    if distance > max_distance and pvalue < alpha:
        reason = (f"prompt embeddings shifted (centroid cosine distance {distance:.3f} > {max_distance}, "
                  f"MMD p = {pvalue:.3f})")
    return out, reason


def centroid_distance(a, b) -> float:
    """1 - cosine similarity of the two sets' mean vectors."""
    import numpy as np

    ca, cb = a.mean(axis=0), b.mean(axis=0)
    return float(1.0 - ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb)))


def mmd_test(a, b, *, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """(biased MMD² with an RBF kernel whose bandwidth is the median pairwise distance, permutation p-value)."""
    import numpy as np

    z = np.concatenate([a, b]).astype(np.float64)
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2 * z @ z.T, 0.0)
    positive = sq[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(positive[positive > 0])) if (positive > 0).any() else 1.0
    kernel = np.exp(-sq / bandwidth)
    n = len(a)

    def statistic(order) -> float:
        k = kernel[np.ix_(order, order)]
        return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())

    observed = statistic(np.arange(len(z)))
    rng = np.random.default_rng(seed)
    at_least = sum(statistic(rng.permutation(len(z))) >= observed for _ in range(permutations))
    return observed, (at_least + 1) / (permutations + 1)


def _histogram_svg(prod_len: list[int], train_len: list[int]) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = max(5, min(40, max(prod_len + train_len) + 1))
    ax.hist(train_len, bins=bins, alpha=0.6, density=True, label="training")
    ax.hist(prod_len, bins=bins, alpha=0.6, density=True, label="production")
    ax.set_xlabel("prompt length (words)")
    ax.set_ylabel("share")
    ax.legend()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def html_report(result: DriftResult, prod_len: list[int], train_len: list[int]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in asdict(result).items())
    status = "ALERT: " + "; ".join(result.reasons) if result.alert else "no drift alert"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge drift</title></head><body>"
            f"<h1>Production vs training prompts</h1><p><b>{html.escape(status)}</b></p><table>{rows}</table>"
            f"{_histogram_svg(prod_len, train_len)}</body></html>")
