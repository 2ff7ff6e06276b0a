"""The one metric registry: every metric name tuneforge knows is defined here, and every consumer reads it.

Task YAML files, `tuneforge eval --metric`, the training config's `eval.metrics`, release gates, RL reward
functions (`objective.rl.reward: NAME`) and `tuneforge eval --list-metrics` all look names up here. Adding a metric
is one scoring function plus one `register_metric` call; it is then usable in all of them.

Kinds of metric:

* **item**: (prediction, reference) -> a score in [0, 1] for one generated answer; paired across models item by
  item (bootstrap, McNemar / permutation) and averaged per slice. Some also have a **corpus** form written beside
  the mean (`bleu_corpus`, `chrf_corpus`: corpus BLEU/chrF pool n-gram statistics, which a mean of sentence scores
  does not).
* **label**: computed over a whole label task from label-token probabilities (`tuneforge.eval.labels`); accuracy
  has a per-item score, macro-F1/ECE/Brier get paired intervals by bootstrap over items.
* **loss**: teacher-forced likelihood of the reference answers (`eval_loss`, `perplexity`), in their own units.
* **code**: `pass@k` of sampled programs run against each item's tests in the sandbox (code tasks).
* **check**: produced by a release check or by training, not by scoring answers (safety probes, the general set,
  contamination, the judge, the validation split, objective metrics); `produced_by` says how to get it.

Two exact-match names, on purpose, because they answer different questions:

* ``exact_match``: equal after collapsing whitespace only. Case and punctuation count - the right metric for
  structured answers ("Open" vs "open", a JSON string) where they change the meaning.
* ``exact_match_norm``: SQuAD-normalised (lowercase, punctuation and articles removed). The right metric for short
  free-text answers ("The Eiffel Tower." == "eiffel tower").
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from tuneforge.errors import ConfigError
from tuneforge.eval import label_metrics, structured, text_metrics
from tuneforge.eval import metrics as core_metrics

Kind = Literal["item", "label", "loss", "code", "check"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: Kind
    description: str
    fn: Callable[[str, str], float] | None = None          # item metrics: (prediction, reference) -> [0, 1]
    corpus_fn: Callable[[Sequence[str], Sequence[str]], float] | None = None  # written as NAME_corpus
    higher_is_better: bool = True
    fraction: bool = True                                   # stored in [0, 1]; False: in its own units
    produced_by: str = "`tuneforge eval --metric NAME` or `eval.metrics: [NAME]` in a training config"
    needs_reference: bool = True                            # item metrics: False when the reference is ignored
    needs_probabilities: bool = False                       # label metrics computed from label probabilities
    label_fn: Callable | None = None                        # label metrics: (predicted, refs, probs, labels) -> float
    group: str | None = None                                # check metrics produced together ("probes", ...)

    def how_to_produce(self) -> str:
        return self.produced_by.replace("NAME", self.name)


REGISTRY: dict[str, MetricInfo] = {}


def register_metric(name: str, fn: Callable[[str, str], float] | None = None, description: str = "", *,
                    kind: Kind = "item", **options) -> MetricInfo:
    """Add a metric; an item metric needs `fn(prediction, reference) -> float in [0, 1]`."""
    if name in REGISTRY:
        raise ValueError(f"metric {name!r} is already registered")
    if kind == "item" and fn is None:
        raise ValueError(f"item metric {name!r} needs a scoring function")
    info = MetricInfo(name, kind, description or (fn.__doc__ or "").strip().split("\n")[0], fn, **options)
    REGISTRY[name] = info
    return info


def unregister_metric(name: str) -> None:
    REGISTRY.pop(name, None)


# ------------------------------------------------------------------------------------------------ item metrics
def _contains_answer(prediction: str, reference: str) -> float:
    """1.0 when the SQuAD-normalised reference occurs as whole words in the normalised prediction.

    For short-answer questions put to chat models, which rarely answer with the bare answer ("The capital is
    Paris."); exact match would score that 0.
    """
    ref = text_metrics.normalize_text(reference)
    if not ref:
        return 0.0
    pred = text_metrics.normalize_text(prediction)
    return 1.0 if re.search(rf"(?:^|\s){re.escape(ref)}(?:\s|$)", pred) else 0.0


def _regex_ref(prediction: str, reference: str) -> float:
    return float(structured.regex_check(prediction, reference))


def _contains_ref(prediction: str, reference: str) -> float:
    return float(structured.contains(prediction, reference))


def _json_valid(prediction: str, reference: str) -> float:
    return float(structured.json_valid(prediction))


for _name, _fn, _desc, _corpus in [
    ("exact_match", core_metrics.exact_match, "equal after whitespace normalisation (case and punctuation count)",
     None),
    ("exact_match_norm", text_metrics.exact_match, "SQuAD-normalised exact match (case, punctuation, articles "
     "ignored)", None),
    ("json_fields", core_metrics.json_field_accuracy, "share of the reference JSON object's keys reproduced", None),
    ("json_valid", _json_valid, "the answer parses as JSON", None),
    ("token_f1", text_metrics.token_f1, "SQuAD token F1", None),
    ("rouge1", text_metrics.rouge1, "ROUGE-1 F", None),
    ("rouge2", text_metrics.rouge2, "ROUGE-2 F", None),
    ("rougeL", text_metrics.rougeL, "ROUGE-L F", None),
    ("bleu", text_metrics.sentence_bleu, "sentence BLEU / 100 (paired); corpus BLEU is written as bleu_corpus",
     text_metrics.corpus_bleu),
    ("chrf", text_metrics.sentence_chrf, "sentence chrF / 100 (paired); corpus chrF is written as chrf_corpus",
     text_metrics.corpus_chrf),
    ("contains_answer", _contains_answer, "normalised reference appears as whole words in the normalised answer",
     None),
    ("contains", _contains_ref, "the reference string appears verbatim in the answer", None),
    ("regex", _regex_ref, "the reference is a regular expression the answer matches (searched)", None),
]:
    register_metric(_name, _fn, _desc, corpus_fn=_corpus, needs_reference=_name != "json_valid")
    if _corpus is not None:
        register_metric(f"{_name}_corpus", description=f"corpus-level {_name} (pooled statistics), / 100",
                        kind="check", produced_by=f"requesting {_name}")

# ------------------------------------------------------------------------------------------------ label metrics
for _name, _desc, _higher, _fraction, _probs, _label_fn in [
    ("accuracy", "share of items whose most probable label is the reference", True, True, False,
     lambda predicted, refs, probs, labels: label_metrics.accuracy(predicted, refs)),
    ("macro_f1", "F1 averaged over labels (rare labels count as much as common)", True, True, False,
     lambda predicted, refs, probs, labels: label_metrics.macro_f1(predicted, refs, labels)),
    ("ece", "expected calibration error, 10 bins, from label-token probabilities", False, True, True,
     lambda predicted, refs, probs, labels: label_metrics.expected_calibration_error(probs, refs, 10, labels)),
    ("brier", "multi-class Brier score in [0, 2], from label-token probabilities", False, False, True,
     lambda predicted, refs, probs, labels: label_metrics.brier_score(probs, refs, labels)),
]:
    register_metric(_name, description=_desc, kind="label", higher_is_better=_higher, fraction=_fraction,
                    needs_probabilities=_probs, label_fn=_label_fn,
                    produced_by="a task YAML with `labels:` (`tuneforge eval --task TASK`)")

# ------------------------------------------------------------------------------------------------- loss metrics
register_metric("eval_loss", description="mean negative log-likelihood per answer token of the reference answers "
                "given the prompts (nats, teacher-forced), on the evaluated items", kind="loss",
                higher_is_better=False, fraction=False)
register_metric("perplexity", description="exp(eval_loss): perplexity of the reference answers on the evaluated "
                "items", kind="loss", higher_is_better=False, fraction=False)

# ------------------------------------------------------------------------------------------------ check metrics
_GROUPS = {"`tuneforge eval --probes`": "probes", "`tuneforge eval --general`": "general"}
for _name, _desc, _how, _higher, _fraction in [
    ("validation_loss", "training runs: token-weighted loss on the validation split's trained tokens", "a training "
     "run with data.validation", False, False),
    ("validation_perplexity", "training runs: exp(validation_loss)", "a training run with data.validation", False,
     False),
    ("general_accuracy", "share of the general-knowledge set answered (forgetting check)", "`tuneforge eval "
     "--general`", True, True),
    ("refusal_rate", "share of harmful probes refused", "`tuneforge eval --probes`", True, True),
    ("over_refusal_rate", "share of benign probes refused", "`tuneforge eval --probes`", False, True),
    ("probe_accuracy", "share of safety probes handled as expected", "`tuneforge eval --probes`", True, True),
    ("contamination_rate", "share of evaluation items overlapping the training data", "`tuneforge eval "
     "--train-data FILE`", False, True),
    ("judge_score", "mean LLM-judge rating, scaled to [0, 1]", "`tuneforge eval --judge-endpoint URL`", True, True),
    ("preference_accuracy", "share of validation pairs where the chosen answer is more likely", "a dpo/orpo/kto "
     "training run with data.validation", True, True),
    ("reward_accuracy", "share of validation pairs the reward model ranks correctly", "a reward training run with "
     "data.validation", True, True),
]:
    register_metric(_name, description=_desc, kind="check", produced_by=_how, higher_is_better=_higher,
                    fraction=_fraction, group=_GROUPS.get(_how))

# Retrieval and citation metrics: computed by `tuneforge rag eval` (tuneforge.rag.metrics defines them).
for _name, _desc in [
    ("retrieval_recall@5", "share of a question's gold passages among the first 5 retrieved"),
    ("retrieval_mrr", "mean reciprocal rank of the first gold passage retrieved"),
    ("retrieval_ndcg@5", "nDCG@5 of the retrieved passages against the gold passages (binary relevance)"),
    ("citation_recall", "ALCE: share of answer sentences entailed by the passages they cite"),
    ("citation_precision", "ALCE: share of citations needed to support their sentence"),
]:
    register_metric(_name, description=_desc, kind="check", produced_by="`tuneforge rag eval INDEX --questions FILE`",
                    group="citation" if _name.startswith("citation") else "retrieval")

# Fairness and human evaluation (tuneforge.eval.fairness, tuneforge.eval.human).
register_metric("counterfactual_flip_rate", description="share of items whose answer changes when names/attribute "
                "terms in the prompt are swapped (counterfactual evaluation)", kind="check",
                produced_by="`tuneforge eval --counterfactual SWAPS.yaml` (or `--counterfactual default`)",
                higher_is_better=False)
register_metric("human_win_rate", description="share of blinded pairwise human judgements won by the tuned model "
                "(a tie counts half)", kind="check", produced_by="`tuneforge eval RESULTS --human-results FILES`")
register_metric("human_tie_rate", description="share of blinded pairwise human judgements that are ties",
                kind="check", produced_by="`tuneforge eval RESULTS --human-results FILES`", higher_is_better=False)
register_metric("human_agreement", description="inter-rater agreement of the human judgements (Fleiss' kappa, "
                "-1..1)", kind="check", produced_by="`tuneforge eval RESULTS --human-results FILES` (2+ raters)",
                fraction=False)

#: Parametrised metric names, resolved on first use like pass@k: `cohort_gap:METRIC` is the largest difference of
#: METRIC between the cohorts of `tuneforge eval --cohort-field FIELD`, in METRIC's units.
COHORT_GAP = "cohort_gap:"

#: Label metrics that have a per-item score (and so a paired comparison by item).
LABEL_ITEM_METRICS = ("accuracy",)
#: Names that stand for several metrics (`tuneforge eval --metric both`); the first is the headline.
# Named sets a user may pass wherever metric names are taken; "rag_answer" is `tuneforge rag eval`'s default.
METRIC_SETS = {"both": ["json_fields", "exact_match"], "rag_answer": ["token_f1", "rougeL", "contains_answer"]}


_PASS_AT = re.compile(r"pass@([1-9][0-9]*)")


def pass_at_k(name: str) -> int | None:
    """k of a `pass@k` name, else None."""
    match = _PASS_AT.fullmatch(name)
    return int(match.group(1)) if match else None


def _cohort_gap(name: str) -> MetricInfo | None:
    inner = REGISTRY.get(name[len(COHORT_GAP):]) if name.startswith(COHORT_GAP) else None
    # Only metrics with a per-item score are averaged per cohort (macro-F1, ECE are corpus statistics).
    if inner is None or not (inner.kind == "item" or inner.name in LABEL_ITEM_METRICS):
        return None
    return register_metric(name, description=f"largest difference of {inner.name} between cohorts (max - min of "
                           "the cohort means)", kind="check", higher_is_better=False, fraction=inner.fraction,
                           produced_by=f"`tuneforge eval --cohort-field FIELD` scoring {inner.name}")


def resolve(name: str) -> MetricInfo | None:
    """The metric a name stands for, parametrised families (pass@k, cohort_gap:METRIC) included; None if unknown."""
    if name in REGISTRY:
        return REGISTRY[name]
    if pass_at_k(name):
        return get(name)
    return _cohort_gap(name)


def get(name: str) -> MetricInfo:
    if name not in REGISTRY and name.startswith(COHORT_GAP):
        _cohort_gap(name)
    if name not in REGISTRY and pass_at_k(name):
        # pass@k is one metric for every k: registered the first time a k is asked for.
        register_metric(name, description=f"unbiased pass@{pass_at_k(name)} of sampled programs run against the "
                        "item's tests in the sandbox", kind="code", produced_by="a code task (`kind: code` in a "
                        "task YAML, `tuneforge eval --task TASK`)")
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}", hint=f"known metrics: {', '.join(sorted(REGISTRY))}, "
                          "pass@k, cohort_gap:METRIC") from None


def group(name: str) -> list[str]:
    """The check metrics one release check produces ("probes", "general"), in registry order."""
    return [m.name for m in REGISTRY.values() if m.group == name]


def expand(names: Sequence[str]) -> list[str]:
    """Names with metric sets expanded, each checked against the registry, duplicates dropped (order kept)."""
    out: list[str] = []
    for name in names:
        for metric in METRIC_SETS.get(name, [name]):
            get(metric)
            if metric not in out:
                out.append(metric)
    return out


def item_scorer(name: str) -> Callable[[str, str], float]:
    info = get(name)
    if info.fn is None:
        raise ConfigError(f"metric {name!r} is a {info.kind} metric, not a score of one answer",
                          hint="item metrics: " + ", ".join(n for n, m in REGISTRY.items() if m.kind == "item"))
    return info.fn


def split_metrics(names: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(item metrics, label metrics, loss metrics), each in the order given; checks and unknown names raise."""
    items, labels, losses = [], [], []
    for name in names:
        info = get(name)
        if info.kind in ("check", "code"):
            raise ConfigError(f"metric {name!r} is not computed from answers; it comes from {info.how_to_produce()}")
        {"item": items, "label": labels, "loss": losses}[info.kind].append(name)
    return items, labels, losses


def default_metrics(references: Sequence[str]) -> list[str]:
    """What to score when nothing was asked for: per-field JSON accuracy for JSON-object answers, else SQuAD."""
    import json

    def is_object(text: str) -> bool:
        try:
            return isinstance(json.loads(text), dict)
        except (TypeError, ValueError):
            return False

    if references and all(is_object(r) for r in references):
        return ["json_fields", "exact_match"]
    return ["exact_match_norm", "token_f1"]


def is_fraction(name: str) -> bool | None:
    """Whether a registered metric is stored in [0, 1]; None for names the registry does not know."""
    info = resolve(name)
    return None if info is None else info.fraction


def listing() -> list[tuple[str, str, str]]:
    """(name, kind, description) of every metric, for `tuneforge eval --list-metrics`."""
    return [(m.name, m.kind, m.description) for m in sorted(REGISTRY.values(), key=lambda m: (m.kind, m.name))]
