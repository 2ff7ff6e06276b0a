"""Distillation: a student (the run's model, any method) learns from a teacher (objective.distill.teacher).

    objective:
      name: distill
      distill: {teacher: runs/quickstart, mode: sequence}      # or mode: token, temperature: 2, alpha: 0.5

sequence: the teacher answers every training prompt greedily (through the inference engine, with its own chat
  template), and its answer replaces the row's last assistant turn (or completion); then plain SFT on those rows.
  The answers are cached in RUN/distill/teacher_answers.jsonl, keyed by teacher, prompt tokens and budget, and
  written as they come, so a resumed or repeated run generates only what is missing. Validation and test keep
  the data's own answers: the student is measured against the truth, not against the teacher.
token: SFT rows as usual, and the loss of `tuneforge.objectives.distill_loss` (KL to the teacher's next-token
  distributions at every trained position, mixed with the hard-label loss). Compares distributions id by id, so
  both tokenizers must have the same vocabulary; anything else is refused before training.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuneforge.errors import ConfigError, DataError
from tuneforge.objectives.sft import SFTObjective

CACHE = Path("distill") / "teacher_answers.jsonl"
#: Prompts answered between two writes of the cache (a killed run loses at most this many answers).
CHUNK = 64


class DistillObjective(SFTObjective):
    name = "distill"

    def __init__(self, config):
        super().__init__(config)
        self.options = config.distill

    # ------------------------------------------------------------------ teacher
    def teacher_ref(self, run_cfg):
        from tuneforge.models.ref import parse_model_ref
        from tuneforge.registry.release import resolve_model_ref

        runs_dir = run_cfg.output.dir
        ref = resolve_model_ref(parse_model_ref(self.options.teacher, runs_dir=runs_dir), runs_dir=runs_dir)
        if not ref.is_local:
            raise ConfigError(f"objective.distill.teacher: {self.options.teacher!r} is a {ref.kind} reference",
                              hint="distillation runs the teacher locally: pass a catalog name, folder, .gguf, "
                                   "hub id, run or adapter folder")
        return ref

    def load_teacher(self, run_cfg):
        from tuneforge.models.inference import InferenceEngine

        return InferenceEngine.from_ref(self.teacher_ref(run_cfg), dtype=run_cfg.model.dtype)

    # ------------------------------------------------------------------ data
    def prepare(self, run_cfg, tokenizer):
        from tuneforge.train.data_prep import load_splits, prepare_data

        splits = load_splits(run_cfg.data)
        teacher_stats = None
        if self.options.mode == "sequence":
            splits["train"], teacher_stats = self.teacher_answers(run_cfg, splits["train"])
        else:
            check_same_vocabulary(self.teacher_tokenizer(run_cfg), tokenizer, self.options.teacher)
        prepared = prepare_data(run_cfg.data, tokenizer, max_test_items=run_cfg.eval.max_items, splits=splits)
        if teacher_stats:
            prepared.stats["train"]["teacher_answers"] = teacher_stats
        return prepared

    def plan_data(self, run_cfg, tokenizer):
        """Without the teacher's answers: generating them (minutes) before a plan would double that cost, since the
        run generates them again into its own cache. The data's own answers stand in for their lengths."""
        if self.options.mode != "sequence":
            return self.prepare(run_cfg, tokenizer), None
        from tuneforge.train.data_prep import prepare_data

        prepared = prepare_data(run_cfg.data, tokenizer, max_test_items=run_cfg.eval.max_items)
        return prepared, ("sequence distillation: the data's own answers stand in for the teacher's (up to "
                          f"objective.distill.max_new_tokens={self.options.max_new_tokens} tokens), not generated "
                          "for the plan")

    def teacher_tokenizer(self, run_cfg):
        from tuneforge.models.loading import load_tokenizer
        from tuneforge.models.sources import resolve_model

        ref = self.teacher_ref(run_cfg)
        return load_tokenizer(resolve_model((ref.base if ref.adapter_path else ref).model_path))

    def teacher_answers(self, run_cfg, loaded):
        """`loaded` with every row's last answer replaced by the teacher's greedy answer, and the counts."""
        import dataclasses

        from tuneforge.atomic import write_text_atomic
        from tuneforge.console import make_progress
        from tuneforge.eval.tasks import make_item

        prompts = [_prompt_of(row, loaded.where(i)) for i, row in enumerate(loaded.rows)]
        engine = self.load_teacher(run_cfg)
        budget = self.options.max_new_tokens
        keys = [_cache_key(self.options.teacher, engine.prompt_ids(make_item(i, "", p, "")), budget)
                for i, p in enumerate(prompts)]
        cache_path = Path(self.run_dir) / CACHE if self.run_dir else None
        cached = _read_cache(cache_path)
        missing = [i for i, key in enumerate(keys) if key not in cached]
        with make_progress(True) as bar:
            task = bar.add_task(f"teacher answers ({len(keys) - len(missing)} cached)", total=len(keys),
                                completed=len(keys) - len(missing))
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start:start + CHUNK]
                completions = engine.generate([make_item(i, "", prompts[i], "") for i in chunk],
                                              max_new_tokens=budget, batch_size=self.options.batch_size,
                                              progress=False)
                for i, completion in zip(chunk, completions):
                    cached[keys[i]] = {"key": keys[i], "text": completion.text,
                                       "finish_reason": completion.finish_reason}
                if cache_path is not None:
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(cache_path, "".join(json.dumps(v) + "\n" for v in cached.values()))
                bar.advance(task, len(chunk))
        del engine  # the teacher is not needed again in this mode
        rows = [_with_answer(row, cached[key]["text"]) for row, key in zip(loaded.rows, keys)]
        stats = {"teacher": self.options.teacher, "generated": len(missing), "cached": len(keys) - len(missing),
                 "hit_token_budget": sum(cached[key]["finish_reason"] == "length" for key in keys),
                 "cache": str(cache_path) if cache_path else None}
        return dataclasses.replace(loaded, rows=rows), stats

    # ------------------------------------------------------------------ trainer
    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir: Path, callbacks):
        if self.options.mode == "sequence":
            return super().build_trainer(run_cfg, model, tokenizer, prepared, output_dir, callbacks)
        from datasets import Dataset
        from trl import SFTConfig

        from tuneforge.models.inference import model_device
        from tuneforge.objectives.base import with_early_stopping
        from tuneforge.objectives.distill_loss import distill_trainer_class

        teacher = self.load_teacher(run_cfg).model.to(model_device(model))
        train_rows, eval_rows = prepared.rendered["train"], prepared.rendered.get("validation") or []
        has_eval = bool(eval_rows)
        columns = ("input_ids", "assistant_masks")
        return distill_trainer_class()(
            model=model,
            args=SFTConfig(**self.training_arguments(run_cfg, output_dir, has_eval=has_eval)),
            train_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in train_rows]),
            eval_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in eval_rows]) if has_eval else None,
            processing_class=tokenizer,
            callbacks=with_early_stopping(callbacks, run_cfg, has_eval),
            teacher=teacher, temperature=self.options.temperature, alpha=self.options.alpha,
            label_smoothing=run_cfg.training.label_smoothing,
        )


def check_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher_name: str) -> None:
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab == student_vocab:
        return
    differing = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()), key=lambda kv: kv[1])[:3]
    shown = ", ".join(f"{token!r}={index}" for token, index in differing)
    raise ConfigError(
        f"objective.distill.teacher: {teacher_name}'s tokenizer is not the student's ({len(teacher_vocab)} vs "
        f"{len(student_vocab)} tokens; differing entries such as {shown}): token-level distillation compares the "
        "two next-token distributions token id by token id",
        hint="use objective.distill.mode: sequence (the teacher's answers as text work across tokenizers), or a "
             "teacher of the student's model family")


def _prompt_of(row: dict, where: str):
    """What the teacher is asked: the messages before the last assistant turn, or the raw prompt."""
    if "messages" in row:
        last = _last_assistant(row["messages"])
        if last is None:
            raise DataError(f"{where}: no assistant turn to replace with the teacher's answer")
        return row["messages"][:last]
    if "prompt" in row and "completion" in row:
        return row["prompt"]
    raise DataError(f"{where}: distillation needs prompts (chat, alpaca, sharegpt or prompt/completion rows)",
                    hint="raw text rows have no prompt for the teacher to answer")


def _last_assistant(messages: list[dict]) -> int | None:
    indices = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    return indices[-1] if indices else None


def _with_answer(row: dict, text: str) -> dict:
    if "messages" in row:
        last = _last_assistant(row["messages"])
        # Tool calls and loss weights of the data's answer belong to that answer, not to the teacher's.
        messages = [dict(m) for m in row["messages"][:last]] + [{"role": "assistant", "content": text}]
        return {**row, "messages": messages}
    return {**row, "completion": text}


def _cache_key(teacher: str, prompt_ids: list[int], budget: int) -> str:
    return hashlib.sha256(json.dumps([teacher, prompt_ids, budget]).encode()).hexdigest()


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            out[entry["key"]] = entry
    return out
