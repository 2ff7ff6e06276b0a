"""Bridge to EleutherAI's lm-evaluation-harness (`lm_eval`): run its tasks against our model or an endpoint.

tuneforge does not depend on lm_eval (it is large and fetches task data from a hub). When it, or a task's data,
is not available locally, `run_harness` raises a TuneforgeError saying what is missing and how to get it, instead
of a traceback from deep inside the harness.
"""
from __future__ import annotations

import importlib.util

from tuneforge.errors import TuneforgeError

INSTALL_HINT = ("install it with `pip install lm-eval` (then its task data must be downloadable or already in the "
                "Hugging Face datasets cache; offline machines need HF_DATASETS_OFFLINE=1 and a warm cache)")


class HarnessUnavailable(TuneforgeError):
    """lm_eval or the data of a requested task cannot be used here."""


def harness_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def run_harness(tasks: list[str], *, model_path: str | None = None, endpoint: str | None = None,
                endpoint_model: str | None = None, limit: int | None = None, batch_size: int = 8) -> dict:
    """lm_eval's `simple_evaluate` on a local HF folder (model "hf") or a chat endpoint ("local-chat-completions")."""
    if not tasks:
        raise HarnessUnavailable("--harness needs at least one task name, e.g. --harness arc_easy,hellaswag")
    if not harness_available():
        raise HarnessUnavailable(f"--harness {','.join(tasks)}: lm-evaluation-harness (module lm_eval) is not "
                                 "installed", hint=INSTALL_HINT)
    import lm_eval

    if endpoint:
        from tuneforge.eval.endpoint import chat_url

        model, args = "local-chat-completions", f"model={endpoint_model},base_url={chat_url(endpoint)}"
    elif model_path:
        model, args = "hf", f"pretrained={model_path}"
    else:
        raise HarnessUnavailable("--harness needs a local model folder or an --endpoint")
    try:
        results = lm_eval.simple_evaluate(model=model, model_args=args, tasks=tasks, limit=limit,
                                          batch_size=batch_size, apply_chat_template=bool(endpoint))
    except Exception as exc:  # the harness raises anything from KeyError to ConnectionError for a missing task
        raise HarnessUnavailable(f"lm_eval could not run {','.join(tasks)}: {type(exc).__name__}: {exc}",
                                 hint="check the task names (`lm_eval --tasks list`) and that their data is "
                                      "cached locally; " + INSTALL_HINT) from None
    return {"tasks": tasks, "limit": limit, "results": results.get("results", {}) if results else {}}
