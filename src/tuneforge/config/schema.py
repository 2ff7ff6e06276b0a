"""The one YAML schema of a tuneforge run.

Every model forbids unknown keys, so a misspelt option is an error rather than silently ignored.
Each field's description feeds `tuneforge config schema` and the `--help` of the commands.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictModel):
    source: str = Field(
        "smollm2-135m-instruct",
        description="Base model: a catalog name (see `tuneforge models ls`), a local HF folder, a .gguf file, "
        "or a hub id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype for training and evaluation (float32 is the safe choice on CPU); "
        "training.frozen_base_dtype can hold a LoRA run's frozen base in bf16 while it trains."
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
    format: Literal["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "preference", "kto", "text"] = Field(
        "auto", description="Row format; `auto` detects it from the fields of the rows."
    )
    max_length: int = Field(
        512, gt=8, description="Maximum tokens per training example; longer ones are truncated. Must not exceed the "
        "model's context window (its config's max_position_embeddings) unless allow_longer_than_context is set.")
    allow_longer_than_context: bool = Field(
        False, description="Allow data.max_length beyond the context window in the model's config: only for models "
        "whose RoPE scaling extends the context past that number, or when extending it on purpose (positions past the "
        "trained window are otherwise garbage in, garbage out).")
    license: str | None = Field(
        None, description="License of the training data (an SPDX id such as cc-by-4.0); carried into the model card "
        "and datasheet, `unknown` when not given.")
    train_on: Literal["assistant", "all"] = Field(
        "assistant",
        description="Which tokens carry loss: only assistant turns/completions (default) or every token.",
    )
    order: Literal["shuffled", "curriculum"] = Field(
        "shuffled", description="Order the training rows are seen in: `shuffled` (the seeded sampler, grouped by "
        "length under batching length_grouped) or `curriculum` (easy -> hard by data.difficulty, the same order in "
        "every epoch; objective sft, not with batching packed). The order used is written to RUN/data_order.json "
        "and reused when the run resumes.")
    difficulty: str = Field(
        "length", description="Difficulty measure of a curriculum: `length` (tokens of the rendered example), "
        "`base_loss` (the base model's mean loss per trained token on the example: one scoring pass before "
        "training) or `field:NAME` (a numeric field of the row, e.g. field:meta.grade).")
    difficulty_order: Literal["easy_first", "hard_first"] = Field(
        "easy_first", description="Curriculum direction: lowest difficulty first (`easy_first`) or the reverse "
        "(`hard_first`, an anti-curriculum). Ties keep file order.")

    @field_validator("difficulty")
    @classmethod
    def _known_difficulty(cls, value: str) -> str:
        if value in ("length", "base_loss") or (value.startswith("field:") and value[len("field:"):].strip()):
            return value
        raise ValueError(f"difficulty {value!r}: use length, base_loss or field:NAME")


class LoraConfig(StrictModel):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) "
                       "with use_rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (default: every attention projection).",
    )
    target: Literal["attention", "all-linear"] | None = Field(
        None,
        description="Preset instead of target_modules: `attention` (every linear layer inside an attention block, "
        "whatever the architecture names them) or `all-linear` (every linear layer except the output head).",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    use_dora: bool = Field(
        False, description="DoRA: split each adapted weight into magnitude and direction; LoRA updates the direction."
    )

    @model_validator(mode="after")
    def _one_target_choice(self) -> "LoraConfig":
        if self.target is not None and "target_modules" in self.model_fields_set:
            raise ValueError("set either target (a preset) or target_modules (explicit names), not both")
        return self


class QLoraConfig(StrictModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Also quantise the per-block scales (saves ~0.4 bit per weight).")
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype the 4-bit weights are dequantised to for matmuls (default: model.dtype)."
    )


class IA3Config(StrictModel):
    target_modules: list[str] | None = Field(
        None, description="Modules whose activations get a learned scale (default: PEFT's choice for the "
        "architecture, e.g. k_proj, v_proj, down_proj for Llama).")
    feedforward_modules: list[str] | None = Field(
        None, description="Subset of target_modules that are feed-forward layers (scaled on their input).")


class PrefixConfig(StrictModel):
    num_virtual_tokens: int = Field(16, gt=0, description="Learned key/value positions prepended in every layer.")
    projection: bool = Field(
        False, description="Reparametrise the prefix through a 2-layer MLP (more trainable parameters, steadier).")


class PromptConfig(StrictModel):
    num_virtual_tokens: int = Field(16, gt=0, description="Learned soft-prompt embeddings prepended to the input.")
    init: Literal["sample_vocab", "random"] = Field(
        "sample_vocab", description="Start from embeddings of random vocabulary tokens, or from random vectors.")


class FreezeConfig(StrictModel):
    train_last_n_blocks: int | None = Field(
        None, gt=0, description="Train the last N transformer blocks (everything else frozen).")
    train: list[Literal["biases", "norms"]] = Field(
        default_factory=list, description="Also (or only) train these parameter groups: biases, norm weights.")


_DEFAULT_LEARNING_RATES = {"full": 1e-5, "freeze": 1e-5, "lora": 2e-4, "qlora": 2e-4, "ia3": 3e-3,
                           "prefix": 1e-2, "prompt": 3e-2}


class MethodConfig(StrictModel):
    name: Literal["full", "lora", "qlora", "ia3", "prefix", "prompt", "freeze"] = Field(
        "lora",
        description="How weights are adapted: `full`, `lora` (also DoRA/rsLoRA via lora options), `qlora` (LoRA on "
        "a 4-bit NF4 base), `ia3`, `prefix` tuning, `prompt` tuning, or `freeze` (train selected layers only).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA options (used by `lora` and `qlora`).")
    qlora: QLoraConfig = Field(default_factory=QLoraConfig, description="4-bit base options (used by `qlora`).")
    ia3: IA3Config = Field(default_factory=IA3Config, description="IA3 options (used when name is `ia3`).")
    prefix: PrefixConfig = Field(default_factory=PrefixConfig, description="Prefix-tuning options.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt-tuning options.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Selective-layer options (`freeze`).")

    @model_validator(mode="after")
    def _freeze_selects_something(self) -> "MethodConfig":
        if self.name == "freeze" and not self.freeze.train_last_n_blocks and not self.freeze.train:
            raise ValueError("method freeze trains nothing: set freeze.train_last_n_blocks and/or freeze.train")
        return self

    def default_learning_rate(self) -> float:
        """Per-method default: few trainable scales (IA3) or virtual tokens want a much larger step than weights."""
        return _DEFAULT_LEARNING_RATES[self.name]


class DPOOptions(StrictModel):
    loss_type: list[Literal[
        "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
        "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
    ]] = Field(["sigmoid"], description="TRL DPOTrainer loss(es): `sigmoid` is the DPO paper's; several are summed "
               "with loss_weights (e.g. [sigmoid, sft] for MPO-style DPO + NLL).")
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type (default: all 1.0).")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model (tau for IPO).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Flip probability for robust DPO / epsilon for EXO.")


class KTOOptions(StrictModel):
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL KTOTrainer loss.")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of rows labelled true (desirable).")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of rows labelled false (undesirable).")


class ORPOOptions(StrictModel):
    beta: float = Field(0.1, gt=0,
                        description="ORPO's lambda: weight of the odds-ratio term next to the NLL of chosen.")


class RewardOptions(StrictModel):
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Penalty on the mean reward, keeping scores centred on 0 (None: off).")


class RLOptions(StrictModel):
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="TRL online trainer: GRPO or RLOO.")
    reward: list[str] = Field(
        ["json_valid"],
        description="Reward functions: a shipped name (json_valid, json_fields, length_penalty), `module:function` "
        "taking (prompts, completions, **columns) -> list[float], or a reward-model folder (e.g. a reward run's "
        "merged/). Several are summed.",
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group of GRPO/RLOO).")
    max_completion_length: int = Field(32, gt=0, description="Token budget of each sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the policy during rollouts.")
    beta: float = Field(0.0, ge=0, description="KL coefficient against the reference (adapter-disabled) model.")


class TaskConfig(StrictModel):
    name: str = Field(..., description="Task name; appears as meta.task and as a results slice.")
    train: str = Field(..., description="Training file of this task.")
    validation: str | None = Field(None, description="Validation file (per-task eval loss).")
    test: str | None = Field(None, description="Test file (per-task generation metrics).")
    weight: float = Field(1.0, gt=0, description="Mixture weight (normalised over all tasks).")


class MultitaskOptions(StrictModel):
    data_task: str = Field("main", description="Task name given to the files under `data:`.")
    data_weight: float = Field(1.0, gt=0, description="Mixture weight of the task under `data:`.")
    tasks: list[TaskConfig] = Field(default_factory=list, description="Further tasks mixed with the one under `data:`.")
    total: int | None = Field(
        None, gt=0, description="Training rows in the mixture (default: the most that every task can supply "
        "without repeating a row).")


class DistillOptions(StrictModel):
    teacher: str | None = Field(
        None, description="The teacher: any local model reference (catalog name, folder, .gguf, hub id, run, "
        "adapter folder, registry:NAME@ALIAS).")
    mode: Literal["sequence", "token"] = Field(
        "sequence", description="`sequence`: the teacher's greedy answers to the training prompts become the "
        "targets (generated once, cached in the run directory), then SFT on them; `token`: KL(teacher || student) "
        "on the teacher's next-token distributions at every trained position, mixed with the hard-label loss "
        "(teacher and student must share a tokenizer).")
    temperature: float = Field(1.0, gt=0, description="token mode: both distributions are softened by this "
                               "temperature; the KL term is multiplied by temperature^2 to keep its gradient scale.")
    alpha: float = Field(0.5, ge=0, le=1, description="token mode: loss = alpha x T^2 x KL + (1 - alpha) x "
                         "cross-entropy on the data's own answers (1: pure distillation).")
    max_new_tokens: int = Field(256, gt=0, description="sequence mode: generation budget of each teacher answer.")
    batch_size: int = Field(16, gt=0, description="sequence mode: prompts the teacher answers together.")


class ObjectiveConfig(StrictModel):
    name: Literal["sft", "cpt", "multitask", "dpo", "kto", "orpo", "reward", "rl", "distill"] = Field(
        "sft",
        description="What is optimised: `sft` (supervised fine-tuning), `cpt` (continued pretraining on raw text), "
        "`multitask` (SFT on a weighted task mixture, per-task metrics), `dpo`/`orpo` (preference pairs), `kto` "
        "(single labelled completions), `reward` (reward model on pairs), `rl` (online GRPO/RLOO), `distill` "
        "(a student trained on a teacher's answers or next-token distributions).",
    )
    distill: DistillOptions = Field(default_factory=DistillOptions,
                                    description="Distillation options (objective `distill`).")
    dpo: DPOOptions = Field(default_factory=DPOOptions, description="DPO options (objective `dpo`).")
    kto: KTOOptions = Field(default_factory=KTOOptions, description="KTO options (objective `kto`).")
    orpo: ORPOOptions = Field(default_factory=ORPOOptions, description="ORPO options (objective `orpo`).")
    reward: RewardOptions = Field(default_factory=RewardOptions,
                                  description="Reward-model options (objective `reward`).")
    rl: RLOptions = Field(default_factory=RLOptions, description="Online RL options (objective `rl`).")
    multitask: MultitaskOptions = Field(default_factory=MultitaskOptions,
                                        description="Task mixture (objective `multitask`).")

    @model_validator(mode="after")
    def _distill_has_teacher(self) -> "ObjectiveConfig":
        if self.name == "distill" and not self.distill.teacher:
            raise ValueError("objective distill needs objective.distill.teacher (the model to learn from)")
        return self


class EWCConfig(StrictModel):
    weight: float = Field(..., gt=0, description="Strength of the pull: weight x sum_i F_i (theta_i - theta0_i)^2, "
                          "with the diagonal Fisher F normalised to mean 1 over the trained parameters (so a weight "
                          "means about what it means for l2sp).")
    general_data: str | None = Field(
        None, description="General-ability set the Fisher is estimated on (rows with question and answer, the "
        "format `tuneforge eval --general` reads); default: the bundled general set.")
    n_samples: int = Field(64, gt=0, description="Rows of the general set used for the Fisher estimate (one "
                           "forward and backward pass each, once before training).")


class RegularizationConfig(StrictModel):
    l2sp: float | None = Field(
        None, gt=0, description="L2-SP: add weight x sum (theta - theta0)^2 over the trained parameters to the "
        "loss, theta0 being the pre-trained weights (full and freeze methods).")
    ewc: EWCConfig | None = Field(
        None, description="Elastic weight consolidation: like l2sp, each parameter weighted by how much the "
        "general set's loss depends on it (diagonal Fisher, computed once at the start; full and freeze methods).")

    @property
    def active(self) -> bool:
        return self.l2sp is not None or self.ewc is not None


#: Methods whose trained parameters are base weights, so a distance to the pre-trained weights means something.
REGULARIZED_METHODS = ("full", "freeze")
#: Objectives trained by the SFT trainer's token loss (or distill's own), where label smoothing and NEFTune apply.
TOKEN_LOSS_OBJECTIVES = ("sft", "cpt", "multitask", "distill")


class TrainingConfig(StrictModel):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate. Default by method: 2e-4 for LoRA/QLoRA, 1e-5 for full and freeze, "
        "3e-3 for IA3, 1e-2 for prefix, 3e-2 for prompt tuning.",
    )
    batch_size: int = Field(
        8, gt=0, description="Examples per device per forward pass. With batching `packed` it counts packed rows, "
        "not examples: each row holds as many whole examples as fit in data.max_length tokens, so a step can train on "
        "many more examples than batch_size x gradient_accumulation_steps.")
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
        "`packed` (concatenated with per-sample attention boundaries; batch_size then counts packed rows) or plain "
        "`padded`.",
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
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of storing them: less memory, "
        "about a third more compute, same gradients."
    )
    gradient_checkpointing_every_n_layers: int = Field(
        1, ge=1, description="With gradient_checkpointing: recompute only every n-th decoder layer and keep the "
        "others' activations (2 = half the layers): memory and speed between no checkpointing and full."
    )
    frozen_base_dtype: Literal["model", "bfloat16", "auto"] = Field(
        "model", description="What a LoRA run's frozen base weights are held in while it trains: `model` "
        "(model.dtype), `bfloat16` (half their memory, and no bf16 copies for autocast; the adapter stays float32 "
        "and trains against the bf16-rounded base, as QLoRA's trains against its 4-bit one) or `auto` (bfloat16 "
        "where the device computes bf16 natively: a GPU with bf16, a CPU with AVX512-BF16 or AMX). Evaluation, "
        "the merge and exports run in model.dtype on the base as trained (bf16 values held exactly in float32), so "
        "the evaluated model is the exported one. Only for method lora with a token objective (full/freeze train "
        "base weights, QLoRA has its own 4-bit base, reward trains a copy of the score head); `auto` is resolved "
        "when the config is read."
    )
    mixed_precision: Literal["no", "bf16", "auto"] = Field(
        "no", description="`bf16`: autocast matmuls to bfloat16 while the weights and the optimizer stay in "
        "model.dtype (TRL's default); faster and smaller activations on GPUs and on CPUs with AVX512-BF16/AMX, "
        "slower on CPUs without them. `no`: compute in model.dtype. `auto`: bf16 where the device computes it "
        "natively, no elsewhere (resolved when the config is read)."
    )
    loss_at_trained_positions: bool = Field(
        True, description="SFT/CPT: run the LM head and cross-entropy only at positions whose next token is trained "
        "(the assistant's answer), not at every position: the same loss and gradients, less time and memory. false "
        "selects the reference path (TRL's LM head over every position). Llama/Mistral/Qwen2/Qwen3 models; falls back "
        "to the reference path by itself when the method trains or adapts the LM head or embeddings, for prompt "
        "learning and under DDP/FSDP/DeepSpeed."
    )
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw_torch", description="Optimizer: `adamw_torch`, or bitsandbytes' 8-bit AdamW (`adamw_8bit`, "
        "`paged_adamw_8bit`, needs bitsandbytes; saves optimizer-state memory on GPU)."
    )
    distributed: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="Multi-process strategy under `tuneforge train --nproc N`: `ddp` (replicated model), "
        "`fsdp` (sharded, PyTorch FSDP) or `deepspeed` (ZeRO; needs deepspeed and distributed_config)."
    )
    distributed_config: str | None = Field(
        None, description="JSON file for the strategy: an FSDP config or a DeepSpeed ZeRO config "
        "(see examples/distributed/)."
    )
    regularization: RegularizationConfig = Field(
        default_factory=RegularizationConfig, description="Stay close to the base: a proximal penalty toward the "
        "pre-trained weights (l2sp, ewc) added to every objective's training loss; full and freeze methods only.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing epsilon of the token loss: (1 - eps) x NLL + eps x the mean "
        "negative log-probability over the vocabulary (sft, cpt, multitask, distill).")
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: uniform noise of scale alpha / sqrt(length x hidden) added to the input "
        "embeddings in training only (sft, cpt, multitask, distill); 5 is the paper's usual value.")
    plan_check: bool = Field(
        True, description="Plan the run before loading weights (`tuneforge plan`) and refuse to start one whose "
        "planned peak memory exceeds this machine's (false, or `tuneforge train --no-plan-check`: run anyway).")
    report_to: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="Experiment trackers that receive the training metrics through the trainer's own integrations "
        "(metrics.jsonl is always written): `mlflow` (MLFLOW_TRACKING_URI), `tensorboard` (TENSORBOARD_LOGGING_DIR) "
        "or `wandb` (WANDB_PROJECT). A tracker whose package is not installed is a config error.",
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no_is_a_string(cls, value):
        # YAML 1.1 (PyYAML, and the key=value overrides) reads a bare `no` as the boolean false.
        return "no" if value is False else value

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, value: list[str]) -> list[str]:
        from tuneforge.integrations.tracking import check_trackers

        return check_trackers(value)

    @model_validator(mode="after")
    def _check_distributed(self) -> "TrainingConfig":
        if self.distributed == "deepspeed" and not self.distributed_config:
            raise ValueError("training.distributed=deepspeed needs training.distributed_config (a DeepSpeed JSON, "
                             "e.g. examples/distributed/zero2.json)")
        if self.distributed == "ddp" and self.distributed_config:
            raise ValueError("training.distributed_config is only read with distributed=fsdp or deepspeed")
        if self.gradient_checkpointing_every_n_layers > 1 and not self.gradient_checkpointing:
            raise ValueError("training.gradient_checkpointing_every_n_layers is only read with "
                             "training.gradient_checkpointing: true")
        return self


class EvalConfig(StrictModel):
    metrics: list[str] | None = Field(
        None,
        description="Metrics for the test items, any name in the metric registry (`tuneforge eval --list-metrics`): "
        "json_fields, exact_match, rougeL, chrf, token_f1, perplexity, ...; the first is the headline. Default: "
        "json_fields + exact_match when every reference is a JSON object, else exact_match_norm + token_f1.",
    )
    max_new_tokens: int = Field(64, gt=0, description="Generation budget per test item (greedy decoding).")
    batch_size: int = Field(16, gt=0, description="Items generated together (left-padded, KV-cached).")
    batch_tokens: int | None = Field(
        None, gt=0, description="Also cap each generation batch at this many KV-cache positions (rows x (longest "
        "prompt + max_new_tokens)): short prompts then batch up to batch_size, long ones fewer. Unset: batch_size "
        "alone decides.")
    max_items: int | None = Field(None, gt=0, description="Evaluate only the first N test items.")
    bootstrap_samples: int = Field(10000, gt=99, description="Resamples for the paired bootstrap interval.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same items.")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from tuneforge.errors import ConfigError
        from tuneforge.eval import registry

        if not value:
            raise ValueError("list at least one metric, or leave eval.metrics out for the default")
        try:
            names = registry.expand(value)
            registry.split_metrics(names)
        except ConfigError as exc:
            raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
        return names


class ExportConfig(StrictModel):
    adapter: bool = Field(True, description="Save the adapter in PEFT format (LoRA runs).")
    merged: bool = Field(True, description="Save a merged safetensors folder with tokenizer and chat template.")
    gguf: list[Literal["f16", "q8_0", "q4_0"]] = Field(
        default_factory=list,
        description="GGUF files to write from the merged model (RUN/gguf/model-<quant>.gguf) for llama.cpp/Ollama; "
        "each is checked in llama.cpp (tokens, chat template, greedy generation, end-of-turn stop) and refused if a "
        "check fails. Needs llama-cpp-python (the `gguf` extra).",
    )
    card: bool = Field(True, description="Write a model card (README.md with Hugging Face front matter) next to "
                       "each exported model.")

    @model_validator(mode="after")
    def _gguf_needs_merged(self) -> "ExportConfig":
        if self.gguf and not self.merged:
            raise ValueError("export.gguf is converted from the merged model: set export.merged: true")
        return self


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
    def _resolve_auto_precision(self) -> "RunConfig":
        training = self.training
        if training.frozen_base_dtype == "bfloat16" and not self.can_hold_frozen_base_in_bf16():
            raise ValueError(f"training.frozen_base_dtype bfloat16 with method {self.method.name} and objective "
                             f"{self.objective.name}: only a LoRA run's frozen base can be held in bf16 "
                             "(use model, or auto)")
        if "auto" not in (training.frozen_base_dtype, training.mixed_precision):
            return self
        from tuneforge.integrations.bf16 import native_bf16

        native = native_bf16()[0]
        if training.mixed_precision == "auto":
            training.mixed_precision = "bf16" if native else "no"
        if training.frozen_base_dtype == "auto":
            bf16 = native and self.can_hold_frozen_base_in_bf16() and self.model.dtype == "float32"
            training.frozen_base_dtype = "bfloat16" if bf16 else "model"
        return self

    def can_hold_frozen_base_in_bf16(self) -> bool:
        """Whether this run's frozen base may be held in bf16 while it trains: only weights nothing trains. LoRA's
        adapter stays float32 (PEFT upcasts it); full and freeze train base weights (an optimizer step in bf16 loses
        small updates), QLoRA holds its own 4-bit base, the reward objective trains a copy of the score head in the
        base's dtype, and IA3/prefix/prompt were not measured in bf16."""
        return self.method.name == "lora" and self.objective.name != "reward"

    def frozen_base_in_bf16(self) -> bool:
        """Whether the frozen base is held in bf16 while training (model.dtype or training.frozen_base_dtype)."""
        return self.model.dtype == "bfloat16" or self.training.frozen_base_dtype == "bfloat16"

    @model_validator(mode="after")
    def _check_consistency(self) -> "RunConfig":
        if self.training.early_stopping_patience and not self.data.validation:
            raise ValueError("training.early_stopping_patience needs data.validation to measure eval loss")
        training = self.training
        if training.regularization.active and self.method.name not in REGULARIZED_METHODS:
            raise ValueError(
                f"training.regularization with method {self.method.name}: the penalty pulls trained base weights "
                f"toward their pre-trained values, and {self.method.name} trains no base weight (its new parameters "
                "start at the base's function already, and its size is its own limit); use method full or freeze")
        if training.regularization.active and training.distributed != "ddp":
            raise ValueError("training.regularization needs whole parameters; training.distributed="
                             f"{training.distributed} shards them: use ddp")
        for name, value in (("label_smoothing", training.label_smoothing),
                            ("neftune_noise_alpha", training.neftune_noise_alpha)):
            if value and self.objective.name not in TOKEN_LOSS_OBJECTIVES:
                raise ValueError(f"training.{name} applies to the token loss of {', '.join(TOKEN_LOSS_OBJECTIVES)}; "
                                 f"objective {self.objective.name} computes its own loss and would ignore it")
        if self.data.order == "curriculum":
            if self.objective.name != "sft":
                raise ValueError(f"data.order curriculum orders SFT examples; objective {self.objective.name} "
                                 "builds its own training rows (use data.order: shuffled)")
            if self.training.batching == "packed":
                raise ValueError("data.order curriculum with training.batching packed: packing regroups the rows "
                                 "and loses the order (use batching length_grouped or padded)")
        return self

    def effective_learning_rate(self) -> float:
        if self.training.learning_rate is not None:
            return self.training.learning_rate
        return self.method.default_learning_rate()
