"""LLM-as-judge: rubric-based pointwise scores and pairwise verdicts from an OpenAI-compatible endpoint
(`--judge-endpoint URL --judge-model NAME`) or a local model (`--judge-model ./folder`, any local model reference,
run through the inference engine).

The judge is checked before any answer is generated (`prepare_judges`: one tiny request to an endpoint, the
reference of a local model resolved), so an unreachable judge costs seconds, not a whole generation pass. The judge
sees what the model saw: the task's system prompt, the question, the reference (when there is one), the answer(s).

- Pointwise: the judge reads the rubric, the question, the reference (when there is one) and one answer, and
  gives a score from 1 to 10 with a reason. `judge_score` in the results is the mean score divided by 10 (a
  fraction, like every bounded tuneforge metric, so `judge_score >= 0.7` gates "7 of 10 on average").
- Pairwise: the judge sees both models' answers and says A, B or tie. Judges favour a position, so every pair is
  judged twice, once in each order; when the two verdicts disagree (after mapping the second back) the pair counts
  as a tie. `judge_win_rate` = (tuned wins + ties / 2) / pairs; `swap_consistency` = share of pairs whose two
  verdicts agree.
- Agreement: with a reference-based metric (the task's headline item metric) where one is available - pointwise,
  does score >= 6 agree with metric >= 0.5; pairwise, on items where the metric prefers one model, does the judge
  prefer the same - and Cohen's kappa between two judges when a second `--judge-model` is given.

Replies are parsed leniently (`parse_score`, `parse_verdict`); an unparseable reply is counted and left out of
the means, never guessed.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_RUBRIC = ("Judge how well the answer does what the question asks: correctness first (compared with the "
                  "reference answer when one is given), then completeness, then concision.")
POINTWISE = ("{rubric}\n\n{system}[Question]\n{question}\n\n{reference}[Answer]\n{answer}\n\n"
             "Rate the answer from 1 (useless) to 10 (perfect). Reply with one line 'Score: N' and one line "
             "'Reason: ...'.")
PAIRWISE = ("{rubric}\n\n{system}[Question]\n{question}\n\n{reference}[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
            "Which answer is better? Reply with one line 'Verdict: A', 'Verdict: B' or 'Verdict: tie' and one "
            "line 'Reason: ...'.")
PASS_SCORE = 6

_SCORE_PATTERNS = [
    re.compile(r'"score"\s*:\s*"?(\d+(?:\.\d+)?)'),
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"\b(?:score|rating)\b\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
]
_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.IGNORECASE),
    re.compile(r'"verdict"\s*:\s*"(A|B|tie)"', re.IGNORECASE),
    re.compile(r"\bverdict\b\s*[:=]?\s*\**\s*(?:answer\s+)?(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\b(?:answer|response)\s+(A|B)\s+is\s+better\b", re.IGNORECASE),
]


def parse_score(text: str) -> int | None:
    """The 1-10 score a judge reply states, or None; out-of-range values are None (never clipped)."""
    for pattern in _SCORE_PATTERNS:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return int(round(value)) if 1 <= value <= 10 else None
    numbers = re.findall(r"\b\d+(?:\.\d+)?\b", text)
    if len(numbers) == 1 and 1 <= float(numbers[0]) <= 10:
        return int(round(float(numbers[0])))
    return None


def parse_verdict(text: str) -> str | None:
    """'A', 'B', 'tie' or None."""
    for pattern in _VERDICT_PATTERNS:
        match = pattern.search(text)
        if match:
            value = match.group(1)
            return "tie" if value.lower() == "tie" else value.upper()
    first = text.strip().split()[:1]
    token = first[0].strip(".:*,").lower() if first else ""
    return {"a": "A", "b": "B", "tie": "tie"}.get(token)


def combine_swapped(first: str | None, second: str | None) -> str | None:
    """Winner by model ('base', 'tuned', 'tie') from (A=base, B=tuned) and (A=tuned, B=base) verdicts; a pair
    whose verdicts disagree is a tie, one with an unparseable verdict is None."""
    if first is None or second is None:
        return None
    winner = {"A": "base", "B": "tuned", "tie": "tie"}[first]
    return winner if swap_consistent(first, second) else "tie"


def swap_consistent(first: str, second: str) -> bool:
    """The two orders name the same winner (or both say tie)."""
    return {"A": "base", "B": "tuned", "tie": "tie"}[first] == {"A": "tuned", "B": "base", "tie": "tie"}[second]


def cohen_kappa(x: list, y: list) -> float | None:
    """Unweighted Cohen's kappa of two raters over the same items (the data layer's, shared with `tuneforge data
    agreement`); None when there is nothing to compare, 1.0 where kappa is undefined because both raters gave one
    and the same category to every item."""
    import math

    from tuneforge.data.labeling.agreement import cohen_kappa as kappa

    if len(x) != len(y):
        raise ValueError("kappa needs two equally long rating lists")
    if not x:
        return None
    value = kappa(list(x), list(y))
    if math.isnan(value):  # chance agreement is total: only possible when every rating is the same category
        return 1.0 if all(a == b for a, b in zip(x, y)) else None
    return value


def _rubric(text: str | None) -> str:
    if text and Path(text).is_file():
        return Path(text).read_text(encoding="utf-8").strip()
    return text or DEFAULT_RUBRIC


def _question(item: dict) -> str:
    if item.get("messages") is None:
        return item["prompt"]
    return "\n".join(m["content"] for m in item["messages"] if m["role"] != "system")


def _system(item: dict) -> str:
    """The task's system prompt as the judge must see it: the answers were written under it."""
    system = "\n".join(m["content"] for m in item.get("messages") or [] if m["role"] == "system")
    return f"[System prompt given to the model]\n{system}\n\n" if system else ""


def _reference(item: dict) -> str:
    return f"[Reference answer]\n{item['reference']}\n\n" if item.get("reference") else ""


class EndpointJudge:
    """A judge model on an OpenAI-compatible server."""

    def __init__(self, client, concurrency: int):
        self.client, self.concurrency, self.model = client, concurrency, client.model

    def check(self) -> None:
        self.client.chat([{"role": "user", "content": "Reply OK."}], max_tokens=1)

    def ask(self, prompts: list[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda p: self.client.chat([{"role": "user", "content": p}], max_tokens=256),
                                 prompts))


class LocalJudge:
    """A local model as the judge, through the inference engine (loaded when first asked, after generation, so
    only one model is in memory at a time)."""

    def __init__(self, ref, batch_size: int):
        self.ref, self.batch_size, self.model, self._engine = ref, batch_size, ref.source, None

    def check(self) -> None:
        from tuneforge.models.sources import resolve_model

        resolve_model((self.ref.base if self.ref.adapter_path else self.ref).model_path)

    def ask(self, prompts: list[str]) -> list[str]:
        from tuneforge.models.inference import InferenceEngine

        if self._engine is None:
            self._engine = InferenceEngine.from_ref(self.ref)
        messages = [[{"role": "user", "content": p}] for p in prompts]
        return [c.text for c in self._engine.generate(messages, max_new_tokens=256, batch_size=self.batch_size,
                                                      description=f"judging ({self.model})")]


def prepare_judges(opts, api_key: str | None) -> list:
    """The judges `opts` asks for, each checked now (before any generation): an endpoint answers one tiny request,
    a local model reference resolves to a model on disk. Raises a TuneforgeError naming the judge otherwise."""
    from tuneforge.errors import ConfigError, TuneforgeError
    from tuneforge.eval.endpoint import EndpointModel

    if opts.judge_endpoint:
        from urllib.parse import urlparse

        if urlparse(opts.judge_endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"--judge-endpoint {opts.judge_endpoint}: not an http(s) URL",
                              hint="for a local model as the judge, pass --judge-model PATH without --judge-endpoint")
        judges = [EndpointJudge(EndpointModel(opts.judge_endpoint, name, api_key, opts.concurrency, opts.timeout,
                                              opts.retries), opts.concurrency)
                  for name in opts.judge_models or ["judge"]]
    else:
        from tuneforge.models.ref import parse_model_ref

        judges = []
        for text in opts.judge_models:
            ref = parse_model_ref(text, runs_dir=opts.runs_dir)
            if not ref.is_local:
                raise ConfigError(f"--judge-model {text}: a {ref.kind} reference is not a local model",
                                  hint="give a local model (folder, run, catalog name), or --judge-endpoint URL for "
                                       "a model on a server")
            judges.append(LocalJudge(ref, opts.batch_size))
    for judge in judges:
        try:
            judge.check()
        except TuneforgeError as exc:
            raise type(exc)(f"judge {judge.model} is not usable (checked before generating): {exc.message}",
                            hint=exc.hint) from None
    return judges


def run_judges(opts, items: list[dict], sides: dict, judges: list) -> dict:
    """Judge the task items of every side with `prepare_judges`' judges; adds per-item `judge_score` scores and
    returns the `judge` section."""
    models = [judge.model for judge in judges]
    rubric = _rubric(opts.judge_rubric)
    records = {name: {r["id"]: r for r in side["per_item"]} for name, side in sides.items()}
    items = [i for i in items if all(i["id"] in recs for recs in records.values())]
    headline = next((m for m in (opts.metrics or []) + list(sides["tuned"]["summary"])
                     if items and m in records["tuned"][items[0]["id"]]["scores"]), None)
    section: dict = {"mode": opts.judge_mode, "judges": models, "rubric": rubric, "summary": {}, "n_items": len(items)}
    if opts.judge_mode == "pointwise":
        ratings: dict[str, dict[str, list]] = {}
        for judge in judges:
            per_side = {}
            for name in sides:
                prompts = [POINTWISE.format(rubric=rubric, system=_system(i), question=_question(i),
                                            reference=_reference(i), answer=records[name][i["id"]]["prediction"])
                           for i in items]
                replies = judge.ask(prompts)
                per_side[name] = [parse_score(r) for r in replies]
                if judge is judges[0]:
                    for item, reply, score in zip(items, replies, per_side[name]):
                        record = records[name][item["id"]]
                        record["judge"] = {"score": score, "reply": reply[:500]}
                        if score is not None:
                            record["scores"]["judge_score"] = score / 10
            ratings[judge.model] = per_side
        primary = ratings[models[0]]
        for name, scores in primary.items():
            valid = [s for s in scores if s is not None]
            section["summary"][name] = {"judge_score": sum(valid) / len(valid) / 10} if valid else {}
            section.setdefault("unparsed", {})[name] = len(scores) - len(valid)
            if headline:
                pairs = [(s >= PASS_SCORE, records[name][i["id"]]["scores"][headline] >= 0.5)
                         for i, s in zip(items, scores) if s is not None]
                if pairs:
                    section.setdefault("agreement_with_metric", {})[name] = {
                        "metric": headline, "agreement": sum(a == b for a, b in pairs) / len(pairs),
                        "kappa": cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]), "n": len(pairs)}
        if len(models) > 1:
            second = ratings[models[1]]
            pairs = [(a, b) for name in sides for a, b in zip(primary[name], second[name])
                     if a is not None and b is not None]
            section["inter_judge_kappa"] = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
        return section
    if "base" not in sides:
        from tuneforge.errors import ConfigError

        raise ConfigError("--judge-mode pairwise compares two models; pass --base")
    winners_by_judge = {}
    for judge in judges:
        ask = []
        for i in items:
            base_answer, tuned_answer = (records[s][i["id"]]["prediction"] for s in ("base", "tuned"))
            for a, b in ((base_answer, tuned_answer), (tuned_answer, base_answer)):
                ask.append(PAIRWISE.format(rubric=rubric, system=_system(i), question=_question(i),
                                           reference=_reference(i), a=a, b=b))
        replies = judge.ask(ask)
        verdicts = [parse_verdict(r) for r in replies]
        firsts, seconds = verdicts[0::2], verdicts[1::2]
        winners = [combine_swapped(f, s) for f, s in zip(firsts, seconds)]
        winners_by_judge[judge.model] = winners
        if judge is judges[0]:
            primary_pairs = list(zip(firsts, seconds))
        if judge is judges[0]:
            for k, item in enumerate(items):
                records["tuned"][item["id"]]["judge"] = {"verdicts": [firsts[k], seconds[k]], "winner": winners[k],
                                                        "replies": [replies[2 * k][:300], replies[2 * k + 1][:300]]}
    winners = winners_by_judge[models[0]]
    valid = [w for w in winners if w is not None]
    stats = {"pairs": len(valid), "unparsed": len(winners) - len(valid),
             "tuned_wins": valid.count("tuned"), "base_wins": valid.count("base"), "ties": valid.count("tie")}
    if valid:
        consistent = sum(1 for f, s in primary_pairs if f is not None and s is not None and swap_consistent(f, s))
        stats["swap_consistency"] = consistent / len(valid)
        section["summary"]["tuned"] = {"judge_win_rate": (stats["tuned_wins"] + stats["ties"] / 2) / len(valid)}
    if headline:
        decided = [(w, "tuned" if t > b else "base") for i, w in zip(items, winners) if w is not None
                   for t, b in [(records["tuned"][i["id"]]["scores"][headline],
                                 records["base"][i["id"]]["scores"][headline])] if t != b]
        if decided:
            stats["agreement_with_metric"] = {"metric": headline, "n": len(decided),
                                              "agreement": sum(w == m for w, m in decided) / len(decided)}
    if len(models) > 1:
        pairs = [(a, b) for a, b in zip(*(winners_by_judge[m] for m in models[:2])) if a is not None and b is not None]
        stats["inter_judge_kappa"] = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
    section["pairwise"] = stats
    return section

