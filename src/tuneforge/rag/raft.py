"""RAFT-style training rows from an index (Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG").

    tuneforge data synth --from-index INDEX --model REF --n 200 --out raft.jsonl

For each sampled chunk (the *oracle*): the model writes one question the chunk answers; the index retrieves the
passages nearest that question, which (minus the oracle) become the *distractors*. A row's context is the oracle at a
random position among `distractors` of them, except for a configurable share of rows whose context holds
distractors only: their target answer says the passages do not contain the answer (RAFT's "P" knob; it teaches the
model not to invent an answer from unrelated passages). The prompt is exactly `rag.answer.rag_messages`, the one the
tuned model sees at query time, so training and serving agree on the format.

Oracle rows get their answer from the model given that same prompt; a row is kept only when the answer cites the
oracle's number and no number outside the context. `writer="extractive"` needs no model: the question names the
oracle's section and the opening words of one of its sentences, and the answer quotes that sentence and cites the
oracle (a small model such as SmolLM2-135M writes questions and cited answers too poorly to be kept: 6 of 240
oracle answers passed the check on the demo index). Every other row goes to `<out>.rejected.jsonl` with the reason
(the file is written even when empty, so a pipeline can count on it). Each kept row's `meta` says where it came
from: index path and hash, generator model, the oracle and distractor chunk ids and positions, and the prompts.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import DataError
from tuneforge.rag.answer import SYSTEM, cited_numbers, rag_messages

QUESTION_SYSTEM = ("Write one question that the passage below answers. The question must make sense without the "
                   "passage (name the subject). Reply with the question only.")
NOT_FOUND = "The passages do not contain the answer to this question."


@dataclass
class RaftResult:
    rows: list[dict]
    rejects: list[dict]
    oracle_rows: int = 0
    no_oracle_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def question_messages(passage: str) -> list[dict]:
    return [{"role": "system", "content": QUESTION_SYSTEM}, {"role": "user", "content": passage}]


def clean_question(text: str) -> str:
    """The first non-empty line, without a leading 'Question:' label or quotes."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line.lower().startswith("question:"):
            line = line[len("question:"):]
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


def oracle_flags(n: int, oracle_share: float, rng: random.Random) -> list[bool]:
    """Exactly floor(n * oracle_share + 0.5) True values, shuffled: the configured share holds for any n."""
    if not 0.0 <= oracle_share <= 1.0:
        raise DataError(f"oracle share must be between 0 and 1 (got {oracle_share})")
    with_oracle = math.floor(n * oracle_share + 0.5)  # half up; round() would round 2.5 to 2
    flags = [True] * with_oracle + [False] * (n - with_oracle)
    rng.shuffle(flags)
    return flags


_SENTENCE = re.compile(r"[^.!?]*[.!?](?=\s|$)", re.S)


def quotable_sentences(text: str, *, min_words: int = 8, max_words: int = 40) -> list[str]:
    """Whole sentences of a passage (whitespace collapsed) that are long enough to answer and short enough to quote;
    headings (Markdown '#', reST underlines), code and grammar lines without sentence punctuation are skipped."""
    lines = text.splitlines()
    kept = []
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and re.fullmatch(r"\s*([=\-*~^#])\1{2,}\s*", lines[i + 1])
        if line.lstrip().startswith("#") or underline or re.fullmatch(r"\s*([=\-*~^#])\1{2,}\s*", line):
            kept.append("")  # a heading ends the sentence before it
            continue
        kept.append(line)
    found = []
    for paragraph in re.split(r"\n\s*\n", "\n".join(kept)):
        for match in _SENTENCE.finditer(paragraph):
            sentence = " ".join(match.group(0).split())
            words = sentence.split()
            if min_words <= len(words) <= max_words and sentence[0].isupper() and "::=" not in sentence:
                found.append(sentence)
    return found


def extractive_question(passage, sentence: str, *, lead_words: int = 6) -> str:
    lead = " ".join(sentence.split()[:lead_words]).rstrip(",;:")
    section = passage.heading or Path(passage.source).stem
    return f'In the section "{section}", what does the reference say after "{lead}"?'


def overlaps(passage, oracle) -> bool:
    """The same chunk, or a chunk of the same file sharing characters with it."""
    return passage.id == oracle.id or (passage.source == oracle.source and passage.start_char < oracle.end_char
                                       and oracle.start_char < passage.end_char)


def answer_problem(answer: str, oracle_number: int | None, n_passages: int) -> str | None:
    """Why a generated answer cannot be a training target (None: it can)."""
    cited = cited_numbers(answer)
    outside = [n for n in cited if not 1 <= n <= n_passages]
    if not answer.strip():
        return "empty answer"
    if outside:
        return f"cites {', '.join(f'[{n}]' for n in outside)}, not among the {n_passages} passages"
    if oracle_number is not None and oracle_number not in cited:
        return f"does not cite the oracle passage [{oracle_number}]"
    return None


def synthesize(retriever, engine, *, n: int, distractors: int = 3, oracle_share: float = 0.8, seed: int = 0,
               generator: str = "", index_path: str = "", index_hash: str = "", question_tokens: int = 48,
               answer_tokens: int = 160, temperature: float = 0.7, mode: str = "hybrid",
               writer: str = "model") -> RaftResult:
    """`n` rows (kept + rejected) from `n` distinct chunks sampled with `seed`; `writer` "model" (the engine writes
    questions and answers) or "extractive" (no engine: see the module docstring)."""
    if writer not in ("model", "extractive"):
        raise DataError(f"writer must be 'model' or 'extractive' (got {writer!r})")
    if n <= 0:
        raise DataError(f"--n must be positive (got {n})")
    if distractors < 0:
        raise DataError(f"--distractors must be >= 0 (got {distractors})")
    ids = [int(i) for i in retriever.ids]
    if len(ids) < n:
        raise DataError(f"{index_path or 'the index'} has {len(ids)} searchable chunks; --n {n} asks for more",
                        hint=f"use --n {len(ids)} or fewer")
    if len(ids) < distractors + 1:
        raise DataError(f"{index_path or 'the index'} has {len(ids)} chunks: too few for {distractors} distractors")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(ids, n))
    oracles = retriever.passages([(cid, 0.0) for cid in chosen])
    flags = oracle_flags(n, oracle_share, rng)

    quotes: list[str | None] = [None] * n
    if writer == "extractive":
        questions, asked = [], []
        for i, passage in enumerate(oracles):
            sentences = quotable_sentences(passage.text)
            quotes[i] = rng.choice(sentences) if sentences else None
            questions.append(extractive_question(passage, quotes[i]) if quotes[i] else "")
            asked.append(_Raw(""))
    else:
        asked = engine.generate([question_messages(p.text) for p in oracles], max_new_tokens=question_tokens,
                                temperature=temperature, seed=seed, description="writing questions")
        questions = [clean_question(c.text) for c in asked]

    result = RaftResult([], [])
    contexts, pending = [], []  # pending: rows whose answer the model writes
    context_quotes: list[str | None] = []
    for oracle, question, include, raw, quote in zip(oracles, questions, flags, asked, quotes):
        base_meta = {"source": "raft", "generator": generator, "index": index_path, "index_hash": index_hash,
                     "seed": seed, "oracle_chunk": {"id": oracle.id, "path": oracle.source,
                                                    "start_char": oracle.start_char, "end_char": oracle.end_char},
                     "question_prompt": QUESTION_SYSTEM if writer == "model" else "extractive", "answer_prompt": SYSTEM,
                     "writer": writer, "oracle_included": include}
        if not question:
            reason = "the model wrote no question" if writer == "model" else "no sentence of 8-40 words to quote"
            _reject(result, {"meta": base_meta, "question_raw": raw.text}, reason)
            continue
        # A few spare candidates: neighbours of the oracle in its own file share text with it (chunk overlap)
        # and may hold the answer, so they cannot serve as distractors.
        candidates = retriever.passages(retriever.ranked_ids(question, distractors + 4, mode))
        passages = [p for p in candidates if not overlaps(p, oracle)][:distractors]
        others = [p.id for p in passages]
        position = None
        if include:
            position = rng.randint(0, len(passages))
            passages.insert(position, oracle)
            position += 1  # citation numbers start at 1
        meta = {**base_meta, "distractor_chunks": others, "oracle_position": position}
        contexts.append((question, passages, meta))
        context_quotes.append(quote)
        if include:
            pending.append(len(contexts) - 1)

    if writer == "extractive":
        return _finish_rows(result, contexts, {i: f'The reference says: "{context_quotes[i]}" '
                                                  f'[{contexts[i][2]["oracle_position"]}]' for i in pending})
    answers = engine.generate([rag_messages(contexts[i][0], contexts[i][1]) for i in pending],
                              max_new_tokens=answer_tokens, temperature=0.0, description="writing cited answers") \
        if pending else []
    by_context = {i: c.text.strip() for i, c in zip(pending, answers)}
    return _finish_rows(result, contexts, by_context)


def _finish_rows(result: RaftResult, contexts: list, by_context: dict[int, str]) -> RaftResult:
    """Rows with their target answers (NOT_FOUND without the oracle), each checked before it is kept."""
    for i, (question, passages, meta) in enumerate(contexts):
        answer = by_context.get(i, NOT_FOUND)
        messages = rag_messages(question, passages) + [{"role": "assistant", "content": answer}]
        row = {"messages": messages, "meta": meta}
        problem = answer_problem(answer, meta["oracle_position"], len(passages)) if i in by_context else None
        if problem:
            _reject(result, row, problem)
            continue
        result.rows.append(row)
        if meta["oracle_included"]:
            result.oracle_rows += 1
        else:
            result.no_oracle_rows += 1
    return result


@dataclass
class _Raw:
    """Stands in for a generated question's raw text (the extractive writer's reason when it has none)."""
    text: str


def _reject(result: RaftResult, row: dict, reason: str) -> None:
    result.rejects.append({**row, "reason": reason})
    kind = re.sub(r"\d+", "N", reason)  # "does not cite the oracle passage [N]": one count per kind of problem
    result.reasons[kind] = result.reasons.get(kind, 0) + 1


def write_jsonl(path: Path, rows: list[dict]) -> str:
    from tuneforge.atomic import write_chunks_atomic

    return write_chunks_atomic(Path(path), (json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows))


def rejected_path(out: Path) -> Path:
    """The side file beside `out` (the naming `data clean --skip-invalid` uses)."""
    return Path(out).with_name(Path(out).name + ".rejected.jsonl")


def synth_from_index(index_dir: Path, model: str, out: Path, *, n: int, **options) -> RaftResult:
    """Load the index and the model, synthesize, write `out` and its rejects file (both atomically)."""
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.rag.index import index_hash
    from tuneforge.rag.retrieve import Retriever

    retriever = Retriever(index_dir)
    extractive = options.get("writer") == "extractive"
    engine = None if extractive else InferenceEngine.from_ref(parse_model_ref(model))
    result = synthesize(retriever, engine, n=n, generator="extractive" if extractive else model,
                        index_path=str(index_dir),
                        index_hash=index_hash(retriever.db), **options)
    write_jsonl(out, result.rows)
    write_jsonl(rejected_path(out), result.rejects)
    return result
