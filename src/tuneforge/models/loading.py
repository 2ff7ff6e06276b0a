"""Load a resolved model and its tokenizer the same way whatever the source was."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, ModelSourceError
from tuneforge.models.sources import ResolvedModel, hub_error

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "auto": "auto",
}

# Config attributes that hold the trained context length, in the order architectures commonly use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx", "max_seq_len")


def load_tokenizer(resolved: ResolvedModel, chat_template_path: str | None = None):
    """The model's tokenizer, ready for training: a pad token (eos when the model has none), right padding.

    `chat_template_path` replaces the model's chat template with the file's content.
    """
    from transformers import AutoTokenizer

    template = None
    if chat_template_path is not None:
        template_file = Path(chat_template_path).expanduser()
        if not template_file.is_file():
            raise ModelSourceError(
                f"chat template file {template_file} does not exist",
                hint="pass a Jinja template file (e.g. chat_template.jinja from a model folder)",
            )
        template = template_file.read_text(encoding="utf-8")
        if not template.strip():
            raise ModelSourceError(f"chat template file {template_file} is empty")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    except Exception as error:  # noqa: BLE001 - hub and parsing failures come in many exception types
        raise _load_error(resolved, "tokenizer", error) from error
    if template is not None:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelSourceError(
                f"the tokenizer of {resolved.source} has neither a pad nor an eos token",
                hint="batches cannot be padded; use a model whose tokenizer defines an eos token",
            )
        # Padding positions are masked out of attention and loss, so reusing eos is safe here.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(resolved: ResolvedModel, dtype: str = "float32"):
    """AutoModelForCausalLM for the resolved source, in `dtype` (float32, bfloat16, float16 or auto)."""
    import torch
    from transformers import AutoModelForCausalLM

    key = DTYPES.get(str(dtype).lower())
    if key is None:
        raise ModelSourceError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    torch_dtype: Any = key if key == "auto" else getattr(torch, key)
    try:
        return AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype)
    except Exception as error:  # noqa: BLE001 - see load_tokenizer
        raise _load_error(resolved, "model", error) from error


def context_window(config) -> int | None:
    """The context length the model was trained for, or None when its config does not say.

    `config` is a transformers config object or the plain dict of a config.json.
    """
    def field(obj, key):
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    for candidate in (config, field(config, "text_config")):
        if candidate is None:
            continue
        for key in _CONTEXT_KEYS:
            value = field(candidate, key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


CONTEXT_HINT = ("lower data.max_length to at most the window; if the model's RoPE scaling really extends its context "
                "beyond its config (or you extend it on purpose), set data.allow_longer_than_context: true")


def context_window_problem(data_cfg, model_config, model_name: str) -> str | None:
    """Why data.max_length does not fit the model (None when it does, is allowed not to, or the window is unknown)."""
    window = context_window(model_config)
    if window is None or data_cfg.allow_longer_than_context or data_cfg.max_length <= window:
        return None
    return f"{data_cfg.max_length} exceeds the context window of {window} tokens of {model_name}"


def check_context_window(data_cfg, model_config, model_name: str) -> None:
    """Stop before training on examples longer than the positions the model was trained for."""
    problem = context_window_problem(data_cfg, model_config, model_name)
    if problem is not None:
        raise ConfigError(f"data.max_length {problem}", hint=CONTEXT_HINT)


def local_model_config(source: str) -> dict | None:
    """config.json of a local model folder, read as JSON (no transformers import, no weights); None otherwise."""
    import json

    path = Path(source).expanduser() / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None  # loading the model will report it properly


def _load_error(resolved: ResolvedModel, what: str, error: Exception) -> ModelSourceError:
    if resolved.kind == "hub":
        return hub_error(resolved.source, error)
    return ModelSourceError(
        f"could not load the {what} of {resolved.source} from {resolved.path}: {type(error).__name__}: {error}",
        hint="the folder may be incomplete; a cached conversion can be rebuilt by deleting it",
    )
