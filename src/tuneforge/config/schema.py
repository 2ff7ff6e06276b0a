"""The one YAML schema of a tuneforge run.

Every model forbids unknown keys, so a misspelt option is an error rather than silently ignored.
Each field's description feeds `tuneforge config show-schema` and the `--help` of the commands.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictModel):
    source: str = Field(
        "smollm2-135m-instruct",
        description="Base model: a catalog name (see `tuneforge models ls`), a local HF folder, a .gguf file, "
        "or a hub id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype for training and evaluation (float32 is the safe choice on CPU)."
    )
    chat_template_path: str | None = Field(
        None,
        description="Optional Jinja chat template file to use instead of the tokenizer's own "
        "(e.g. one that already has {% generation %} markers).",
    )


class DataConfig(StrictModel):
    train: str = Field(..., description="Training data file (JSONL); `quickstart:` paths refer to bundled data.")
    validation: str | None = Field(None, description="Validation file for eval loss and early stopping.")
    test: str | None = Field(None, description="Held-out test file for the base-vs-tuned comparison.")
    format: Literal["auto", "chat", "alpaca", "prompt_completion"] = Field(
        "auto", description="Row format; `auto` detects it from the fields of the rows."
    )
    max_length: int = Field(512, gt=8, description="Maximum tokens per training example; longer ones are truncated.")
    train_on: Literal["assistant", "all"] = Field(
        "assistant",
        description="Which tokens carry loss: only assistant turns/completions (default) or every token.",
    )


class LoraConfig(StrictModel):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (default: every attention projection).",
    )


class MethodConfig(StrictModel):
    name: Literal["full", "lora"] = Field("lora", description="How weights are adapted: `full` or `lora`.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA options (used when name is `lora`).")


class ObjectiveConfig(StrictModel):
    name: Literal["sft"] = Field("sft", description="What is optimised: `sft` (supervised fine-tuning).")


class TrainingConfig(StrictModel):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate. Default by method: 2e-4 for LoRA, 1e-5 for full fine-tuning.",
    )
    batch_size: int = Field(8, gt=0, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Forward passes per optimizer step.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming the LR up linearly.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    batching: Literal["length_grouped", "packed", "padded"] = Field(
        "length_grouped",
        description="How batches are built: `length_grouped` (similar lengths together, low padding), "
        "`packed` (concatenated with per-sample attention boundaries) or plain `padded`.",
    )
    eval_every_steps: int = Field(20, gt=0, description="Evaluate validation loss every N optimizer steps.")
    save_every_steps: int = Field(50, gt=0, description="Write a checkpoint every N optimizer steps.")
    save_total_limit: int = Field(2, gt=0, description="Keep at most this many checkpoints.")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without validation-loss improvement."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Minimum validation-loss decrease that counts as an improvement."
    )
    logging_steps: int = Field(1, gt=0, description="Log metrics every N optimizer steps.")
    seed: int = Field(42, description="Seed for python, numpy and torch RNGs, data order and dropout.")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's own choice).")


class EvalConfig(StrictModel):
    metric: Literal["exact_match", "json_fields", "both"] = Field(
        "both",
        description="Task metric on generated answers: whole-answer exact match, per-field accuracy of a JSON "
        "answer, or both (the first reported is the headline).",
    )
    max_new_tokens: int = Field(64, gt=0, description="Generation budget per test item (greedy decoding).")
    batch_size: int = Field(16, gt=0, description="Items generated together (left-padded, KV-cached).")
    max_items: int | None = Field(None, gt=0, description="Evaluate only the first N test items.")
    bootstrap_samples: int = Field(10000, gt=99, description="Resamples for the paired bootstrap interval.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same items.")


class ExportConfig(StrictModel):
    adapter: bool = Field(True, description="Save the adapter in PEFT format (LoRA runs).")
    merged: bool = Field(True, description="Save a merged safetensors folder with tokenizer and chat template.")


class OutputConfig(StrictModel):
    dir: str = Field("runs", description="Parent directory of run directories.")
    name: str | None = Field(None, description="Run name (default: derived from the config file name and time).")
    overwrite: bool = Field(False, description="Replace an existing run directory of the same name.")


class RunConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model and how to load it.")
    data: DataConfig = Field(..., description="Datasets and how examples are rendered.")
    method: MethodConfig = Field(default_factory=MethodConfig, description="How weights are adapted.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="What is optimised.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimisation hyperparameters.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation after training.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="What to export after training.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where the run directory goes.")

    @model_validator(mode="after")
    def _check_consistency(self) -> "RunConfig":
        if self.training.early_stopping_patience and not self.data.validation:
            raise ValueError("training.early_stopping_patience needs data.validation to measure eval loss")
        return self

    def effective_learning_rate(self) -> float:
        if self.training.learning_rate is not None:
            return self.training.learning_rate
        return 2e-4 if self.method.name == "lora" else 1e-5
