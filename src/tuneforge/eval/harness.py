"""Bridge to EleutherAI's lm-evaluation-harness (`lm_eval`): run its tasks against our model or an endpoint.

lm_eval is an optional extra (`pip install tuneforge[harness]`): it is large and its built-in tasks fetch data from
the Hugging Face hub. Two ways to run it:

- a built-in task name (`--harness arc_easy`): needs the task's data downloadable or already in the datasets cache;
- your own task YAML (`--harness ./my_task.yaml`, or a folder of them): an lm_eval task config whose data is a local
  file, e.g. ``dataset_path: json`` with ``dataset_kwargs: {data_files: {test: /path/items.jsonl}}``; this runs
  fully offline. The folder of each YAML is passed to lm_eval's TaskManager as an include path and the task is
  selected by the `task:` name inside the file.

The model runs on CUDA when torch has it and on the CPU otherwise: lm_eval's own default is "cuda", which fails on
every CPU-only machine with "Torch not compiled with CUDA enabled".

When lm_eval, a task or its data is not available, `run_harness` raises a TuneforgeError saying what is missing and
how to get it, instead of a traceback from deep inside the harness.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneforge.errors import TuneforgeError

INSTALL_HINT = ("install it with `pip install 'tuneforge[harness]'` or `pip install lm-eval`; built-in tasks then "
                "need their data downloadable or in the Hugging Face datasets cache, while a local task YAML "
                "(--harness FILE.yaml) whose dataset is a local file runs offline")


class HarnessUnavailable(TuneforgeError):
    """lm_eval or the data of a requested task cannot be used here."""


def harness_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _task_name(path: Path) -> str:
    """The `task:` a local lm_eval YAML defines (read leniently: lm_eval YAMLs may carry `!function` tags)."""
    import yaml

    class Lenient(yaml.SafeLoader):
        pass

    Lenient.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=Lenient)  # a SafeLoader subclass: no code runs
    except (OSError, yaml.YAMLError) as exc:
        raise HarnessUnavailable(f"{path}: not a readable lm_eval task YAML: {exc}") from None
    name = config.get("task") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        raise HarnessUnavailable(f"{path}: task: missing; an lm_eval task YAML names its task with 'task: NAME'")
    return name


def resolve_tasks(tasks: list[str]) -> tuple[list[str], list[str]]:
    """(task names for lm_eval, include paths): YAML files become their `task:` name plus their folder, folders of
    YAMLs become include paths and every task they define; other entries are built-in task names."""
    names, include = [], []
    for entry in tasks:
        path = Path(entry)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise HarnessUnavailable(f"--harness {entry}: no such task YAML")
            names.append(_task_name(path))
            include.append(str(path.resolve().parent))
        elif path.is_dir():
            found = sorted(path.glob("*.y*ml"))
            if not found:
                raise HarnessUnavailable(f"--harness {entry}: the folder holds no task YAML")
            names += [_task_name(p) for p in found]
            include.append(str(path.resolve()))
        else:
            names.append(entry)
    return names, list(dict.fromkeys(include))


def run_harness(tasks: list[str], *, model_path: str | None = None, endpoint: str | None = None,
                endpoint_model: str | None = None, limit: int | None = None, batch_size: int = 8,
                device: str | None = None) -> dict:
    """lm_eval's `simple_evaluate` on a local HF folder (model "hf") or a chat endpoint ("local-chat-completions")."""
    if not tasks:
        raise HarnessUnavailable("--harness needs at least one task name or task YAML, e.g. --harness arc_easy")
    if not harness_available():
        raise HarnessUnavailable(f"--harness {','.join(tasks)}: lm-evaluation-harness (module lm_eval) is not "
                                 "installed", hint=INSTALL_HINT)
    names, include = resolve_tasks(tasks)
    import lm_eval
    from lm_eval.tasks import TaskManager

    if endpoint:
        from tuneforge.eval.endpoint import chat_url

        model, args = "local-chat-completions", f"model={endpoint_model},base_url={chat_url(endpoint)}"
    elif model_path:
        model, args = "hf", f"pretrained={model_path}"
    else:
        raise HarnessUnavailable("--harness needs a local model folder or an --endpoint")
    device = device or default_device()
    builtin = len(include) < len(names) or not include
    try:
        # Indexing lm_eval's thousands of built-in YAMLs takes seconds; skip it when every task is a local one.
        manager = TaskManager(include_path=include or None, include_defaults=builtin)
        unknown = [n for n in names if n not in manager.all_tasks]
        if unknown:
            raise HarnessUnavailable(f"--harness: unknown lm_eval task(s) {', '.join(unknown)}",
                                     hint="check the names (`lm_eval ls tasks`) or pass a task YAML file")
        results = lm_eval.simple_evaluate(model=model, model_args=args, tasks=names, limit=limit,
                                          batch_size=batch_size, device=None if endpoint else device,
                                          apply_chat_template=bool(endpoint), task_manager=manager,
                                          bootstrap_iters=0, log_samples=False)
    except HarnessUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the harness raises anything from KeyError to ConnectionError for a missing task
        raise HarnessUnavailable(f"lm_eval could not run {','.join(tasks)}: {type(exc).__name__}: {exc}",
                                 hint="check that each task's data is local or cached; " + INSTALL_HINT) from None
    return {"tasks": names, "task_files": [t for t in tasks if Path(t).suffix in (".yaml", ".yml")],
            "limit": limit, "device": None if endpoint else device,
            "results": results.get("results", {}) if results else {}}
