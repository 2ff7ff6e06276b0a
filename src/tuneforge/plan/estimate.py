"""The estimate: peak memory by component, seconds per step, total time, tokens per step, and whether it fits.

Every term is a named component with the formula that produced it, so a plan can be checked by hand:

memory (the training phase; the load and evaluation phases are estimated too and the peak is the largest)
  runtime        process / CUDA context before any tensor (device constant)
  weights        parameters x bytes of model.dtype; QLoRA: block linears at 4 bits + their scales, the rest fp32
  reference      DPO/KTO with full fine-tuning: TRL keeps a second, frozen copy of the weights (PEFT methods switch
                 the adapter off instead)
  adapter        trainable parameters a PEFT method adds (LoRA: r x (in + out) per adapted linear)
  gradients      trainable parameters x bytes of their dtype
  optimizer      AdamW: 2 states per trainable parameter (param dtype; 8-bit AdamW: 1 byte each)
  activations    saved for backward: per token per block (fp32 elements, measured with saved-tensor hooks on Llama
                 blocks: full 10h + 4i + 2kv + 70, frozen base 3.5h + 3i + 2kv + 70, + 2 x in_features + r per
                 LoRA-adapted linear with dropout) x rows x longest padded row x blocks; gradient checkpointing keeps
                 one block's input per block plus one block's activations
  logits         the LM head. TRL (SFT, DPO) computes it in tiles of 4096 positions x 32768 vocabulary columns
                 (trl.trainer.utils.add_fused_lm_head): a few tile-sized fp32 temporaries, never batch x seq x vocab.
                 Other trainers materialise batch x seq x vocab x 4 bytes (x 3: logits, log-softmax, its gradient).
  optimizer step torch's foreach AdamW makes temporaries the size of the trainable parameters while it steps
time
  FLOPs          2 x block parameters x tokens forward, the same again for input gradients, and again for weight
                 gradients of trainable matrices only (so 6 x params x tokens for full fine-tuning, ~4x for adapters),
                 + attention 4 x seq x hidden per token per block (x3 with backward), + the LM head's 2 x hidden x
                 vocab per scored position (forward, recomputed in backward, input gradient, weight gradient if
                 trained); DPO adds a reference forward over the same sequences; checkpointing adds a forward
  seconds        FLOPs / (device matmul FLOP/s x efficiency) + bytes moved / bandwidth + a per-block step overhead
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tuneforge.models.heads import PLAIN_HEAD_MODELS, SCORE_CHUNK_POSITIONS, TRAINING_CHUNK_POSITIONS
from tuneforge.plan.devices import Device
from tuneforge.plan.shape import ModelShape, lora_trainable
from tuneforge.plan.workload import Workload

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
TILE_TOKENS, TILE_VOCAB = 4096, 32768       # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE
#: fp32 temporaries of tile size alive at once in TRL's torch fallback of the tiled LM head (CPU): the matmul
#: buffer, the scaled logits, exp, exp x logits and the masked copy in forward; y, z, log_p, p, grad in backward.
CPU_LOGIT_TILES, GPU_LOGIT_TILES = 5, 1
CHUNKED_LM_HEAD_OBJECTIVES = ("sft", "cpt", "multitask", "dpo")
REFERENCE_OBJECTIVES = ("dpo", "kto")
#: Bytes per parameter of bitsandbytes 4-bit weights: 0.5 for the codes + block scales (fp32 per 64 weights, or
#: 8-bit per 64 + fp32 per 256 blocks with double quantisation).
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}


#: Average bytes per saved activation element under bf16 autocast: matmul outputs are bf16, norms, softmax and the
#: residual stream stay fp32.
MIXED_ELEMENT_BYTES = 3
#: fp32 copies of the block linears a QLoRA run on a CPU holds beyond the 4-bit weights: measured +1.35 GiB over the
#: same LoRA run on SmolLM2-135M (0.65 GiB left by loading and quantising, 0.7 GiB more after the first forward),
#: with 0.40 GiB of block linears in fp32 (bench/bench_plan.py, 2026-12-03).
QLORA_CPU_COPIES = 3


def checkpointed_blocks(training, blocks: int) -> int:
    """Blocks whose activations are recomputed: every n-th of them under gradient checkpointing, else none."""
    if not training.gradient_checkpointing:
        return 0
    return math.ceil(blocks / training.gradient_checkpointing_every_n_layers)


def held_blocks(training, blocks: int) -> int:
    """Most blocks whose full activations exist at once under (partial) checkpointing: the kept blocks while the
    backward pass starts, or, when it recomputes the topmost checkpointed block, the kept blocks below it + that one.
    transformers checkpoints the blocks whose index is a multiple of n."""
    n = training.gradient_checkpointing_every_n_layers
    kept = blocks - checkpointed_blocks(training, blocks)
    top = (blocks - 1) // n * n
    return max(kept, top - top // n + 1)


def trained_positions_path(run_cfg) -> bool:
    """SFT whose loss runs the LM head on trained positions only (train/trained_positions.py): not when the method
    trains the LM head (full fine-tuning), where the trainer takes the reference path."""
    return (run_cfg.objective.name == "sft" and run_cfg.training.loss_at_trained_positions
            and run_cfg.method.name != "full")


@dataclass
class Component:
    name: str
    bytes: float
    how: str


@dataclass
class Plan:
    device: str
    device_source: str
    memory_bytes: float                # the device's memory (this machine: total RAM)
    components: list[Component]        # training phase
    phases: dict[str, float]           # peak bytes of load / train / eval
    peak_bytes: float
    fits: bool
    seconds_per_step: float
    time_parts: dict[str, float]       # seconds per step by part
    steps: int
    total_seconds: float
    tokens_per_step: float             # padded positions the model computes per optimizer step
    real_tokens_per_step: float        # non-pad tokens per optimizer step
    trained_tokens_per_step: float
    flops_per_step: float
    trainable_params: int
    total_params: int
    notes: list[str] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(peak_memory_gib=round(self.peak_gib, 3), memory_gib=round(self.memory_bytes / GIB, 2))
        return out


# ------------------------------------------------------------------------------------------------ parameters


def trainable_parameters(method_cfg, shape: ModelShape, objective: str = "sft") -> tuple[int, str, list[str]]:
    """(trainable count, how it was counted, notes) for the configured method, from the shape alone."""
    name = method_cfg.name
    h, layers = shape.hidden, shape.layers
    if name == "full":
        return shape.total_params, "every parameter", []
    if name in ("lora", "qlora"):
        options = method_cfg.lora
        targets = options.target or options.target_modules
        count, adapted = lora_trainable(shape, targets, options.r)
        notes = [] if adapted else [f"LoRA targets {targets} match no linear layer in the weights: 0 adapter params"]
        if options.use_dora:  # a magnitude vector per adapted output feature
            count += sum(o for g in shape.linears.values() if g.name in adapted for _, o in g.shapes)
        return count, f"r={options.r} x (in + out) on {', '.join(adapted) or 'nothing'}", notes
    if name == "ia3":
        targets = method_cfg.ia3.target_modules or ["k_proj", "v_proj", "down_proj"]
        ff = method_cfg.ia3.feedforward_modules or ["down_proj"]
        count = sum(i if g.name in ff else o for g in shape.linears.values() if g.name in targets for i, o in g.shapes)
        return count, f"one scale per channel of {', '.join(targets)}", []
    if name == "prefix":
        options = method_cfg.prefix
        count = options.num_virtual_tokens * layers * 2 * h
        if options.projection:
            count += options.num_virtual_tokens * h + h * h + h + h * layers * 2 * h + layers * 2 * h
        return count, f"{options.num_virtual_tokens} virtual key/value positions x {layers} blocks", []
    if name == "prompt":
        return method_cfg.prompt.num_virtual_tokens * h, "virtual token embeddings", []
    if name == "freeze":
        options = method_cfg.freeze
        per_block = shape.block_params / max(layers, 1)
        count = int(per_block * (options.train_last_n_blocks or 0))
        if "norms" in options.train:
            count += (2 * layers + 1) * h
        return count, f"last {options.train_last_n_blocks or 0} blocks + {options.train or 'nothing else'}", []
    # A method added to the registry after this planner: 1% trainable is a typical adapter size.
    return shape.total_params // 100, "unknown method: 1% of parameters assumed", [
        f"method {name!r} is not modelled: trainable parameters assumed 1% of the model, activations as LoRA"]


def _adapted_linears(method_cfg, shape: ModelShape) -> list[tuple[int, int]]:
    """(in, out) of every linear a LoRA-style method adapts in one block (activation cost per adapted module)."""
    if method_cfg.name not in ("lora", "qlora"):
        return []
    options = method_cfg.lora
    _, names = lora_trainable(shape, options.target or options.target_modules, options.r)
    return [g.shapes[0] for g in shape.linears.values() if g.name in names and g.shapes]


# ------------------------------------------------------------------------------------------------ memory


def activation_elements_per_token(shape: ModelShape, method_cfg) -> tuple[float, str]:
    """fp32 elements saved for backward per token per trained block (see the module docstring for the fit)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    if method_cfg.name in ("full", "freeze"):
        return 10 * h + 4 * i + 2 * kv + 70, "10h + 4i + 2kv + 70 (every weight trained)"
    base = 3.5 * h + 3 * i + 2 * kv + 70
    extra = 0.0
    if method_cfg.name in ("lora", "qlora"):
        per_input = 2 if method_cfg.lora.dropout > 0 else 1
        extra = sum(per_input * fan_in + method_cfg.lora.r for fan_in, _ in _adapted_linears(method_cfg, shape))
        return base + extra, f"3.5h + 3i + 2kv + 70 + {per_input} x in + r per adapted linear"
    return base, "3.5h + 3i + 2kv + 70 (frozen base, gradients flow through)"


def estimate(run_cfg, shape: ModelShape, workload: Workload, device: Device) -> Plan:
    training, method_cfg, objective = run_cfg.training, run_cfg.method, run_cfg.objective.name
    dtype = run_cfg.model.dtype
    pbytes = DTYPE_BYTES[dtype]
    on_gpu = device.kind == "gpu"
    mixed = training.mixed_precision == "bf16"
    notes = list(shape.notes)
    components: list[Component] = []

    def add(name: str, value: float, how: str) -> None:
        components.append(Component(name, float(value), how))

    trainable, counted, method_notes = trainable_parameters(method_cfg, shape, objective)
    notes += method_notes

    # --- weights
    if method_cfg.name == "qlora":
        linear = sum(i * o for g in shape.linears.values() for i, o in g.shapes)
        nf4 = NF4_BYTES[method_cfg.qlora.double_quant]
        weights = linear * nf4 + (shape.total_params - linear) * 4  # prepare_model_for_kbit_training: rest in fp32
        how = f"{linear / 1e6:.1f}M block linears at {nf4 * 8:.2f} bits + {(shape.total_params - linear) / 1e6:.1f}M " \
              "others in fp32"
    elif run_cfg.training.frozen_base_dtype == "bfloat16":
        weights = shape.total_params * DTYPE_BYTES["bfloat16"]
        how = (f"{shape.total_params / 1e6:.1f}M parameters x 2 B (the frozen base held in bfloat16 while training; "
               f"{dtype} to load and evaluate)")
    else:
        weights = shape.total_params * pbytes
        how = f"{shape.total_params / 1e6:.1f}M parameters x {pbytes} B ({dtype})"
    add("runtime", device.runtime_bytes, "process + libraries" if not on_gpu else "CUDA context + allocator")
    add("weights", weights, how)
    if method_cfg.name == "qlora" and not on_gpu:
        add("dequantised copies", QLORA_CPU_COPIES * linear * 4,
            f"bitsandbytes on a CPU: {QLORA_CPU_COPIES} x {linear / 1e6:.1f}M block linears x 4 B (the fp32 weights "
            "loaded before quantisation, and the fp32 copies forward and backward dequantise, stay in the allocator)")
    full_weights_trained = method_cfg.name in ("full", "freeze")
    if objective in REFERENCE_OBJECTIVES and full_weights_trained:
        add("reference", shape.total_params * pbytes, "frozen copy of the weights for the reference log-probs")

    # --- trainable state
    adapter = 0 if full_weights_trained else trainable * 4  # PEFT keeps adapters in fp32
    if adapter:
        add("adapter", adapter, f"{trainable:,} trainable ({counted}) x 4 B")
    grad_bytes = trainable * (pbytes if full_weights_trained else 4)
    add("gradients", grad_bytes, f"{trainable:,} x {pbytes if full_weights_trained else 4} B")
    state_bytes = 1 if "8bit" in training.optimizer else (pbytes if full_weights_trained else 4)
    add("optimizer", 2 * trainable * state_bytes, f"AdamW: 2 states x {trainable:,} x {state_bytes} B "
        f"({training.optimizer})")

    # --- activations: the biggest forward pass (rows x longest padded row)
    rows_peak = max((b[0] for b in workload.batches), default=training.batch_size)
    seq_peak = max((b[1] for b in workload.batches), default=run_cfg.data.max_length)
    per_token, act_how = activation_elements_per_token(shape, method_cfg)
    element_bytes = max(pbytes, 4 if not on_gpu else pbytes)
    if mixed:
        element_bytes = MIXED_ELEMENT_BYTES
        act_how += f"; bf16 autocast: {MIXED_ELEMENT_BYTES} B per element on average"
    act_bytes_per_token = per_token * element_bytes
    blocks = shape.layers
    if method_cfg.name == "freeze":
        blocks = min(shape.layers, method_cfg.freeze.train_last_n_blocks or 0) or 1
    tokens_peak = rows_peak * seq_peak
    recomputed = checkpointed_blocks(training, blocks)
    if recomputed:
        held = held_blocks(training, blocks)
        activations = tokens_peak * (recomputed * shape.hidden * pbytes + held * act_bytes_per_token)
        act_how = (f"checkpointing {recomputed} of {blocks} blocks: their inputs + at most {held} blocks' "
                   f"activations at once ({act_how})")
    else:
        activations = tokens_peak * blocks * act_bytes_per_token
    add("activations", activations, f"{rows_peak} rows x {seq_peak} tokens x {blocks} blocks x "
        f"{act_bytes_per_token:.0f} B ({act_how})")
    if mixed and run_cfg.model.dtype == "float32" and run_cfg.training.frozen_base_dtype != "bfloat16":
        # Autocast keeps a bf16 copy of every weight a matmul read until the step's backward has used it.
        add("autocast copies", shape.block_params * 2, f"{shape.block_params / 1e6:.1f}M block weights x 2 B (bf16 "
            "copies autocast caches for the backward)")

    # --- logits
    positions_peak = rows_peak * (seq_peak - 1)
    chunked = objective in CHUNKED_LM_HEAD_OBJECTIVES
    if trained_positions_path(run_cfg):
        scored = min(int(positions_peak * workload.trained_share) + 1, TRAINING_CHUNK_POSITIONS)
        logits = 3 * scored * shape.vocab * 4
        logits_how = (f"trained positions only: 3 x {scored} positions x {shape.vocab} vocab x 4 B (logits, "
                      "log-softmax, gradient)")
    elif chunked:
        scored = positions_peak
        if on_gpu:  # with Triton, TRL scores only positions that carry loss
            scored = int(positions_peak * workload.trained_share)
        tiles = GPU_LOGIT_TILES if on_gpu else CPU_LOGIT_TILES
        logits = tiles * min(scored, TILE_TOKENS) * min(shape.vocab, TILE_VOCAB) * 4
        logits_how = (f"TRL tiled LM head: {tiles} x {min(scored, TILE_TOKENS)} positions x "
                      f"{min(shape.vocab, TILE_VOCAB)} vocab x 4 B (full batch x seq x vocab never held)")
    else:
        logits = 3 * positions_peak * shape.vocab * 4
        logits_how = f"3 x {rows_peak} x {seq_peak - 1} x {shape.vocab} vocab x 4 B (logits, log-softmax, gradient)"
    add("logits", logits, logits_how)
    head_trained = full_weights_trained and method_cfg.name == "full"
    head_grad = shape.head_params * 4 if head_trained else 0
    foreach = trainable * (pbytes if full_weights_trained else 4)
    add("optimizer step", foreach, "foreach AdamW temporaries, one trainable-sized list")

    static = sum(c.bytes for c in components
                 if c.name in ("runtime", "weights", "dequantised copies", "reference", "adapter", "optimizer"))
    autocast = sum(c.bytes for c in components if c.name == "autocast copies")
    backward = activations + logits + head_grad + autocast
    stepping = grad_bytes + foreach
    train_peak = static + max(backward, stepping)
    # Loading: safetensors are memory-mapped while the tensors are materialised, so both count for a moment.
    file_bytes = shape.total_params * (shape.file_dtype_bytes or pbytes)
    loaded = shape.total_params * pbytes if method_cfg.name != "qlora" else weights  # in model.dtype
    load_peak = device.runtime_bytes + (loaded + file_bytes if not on_gpu else loaded)
    eval_rows = max(run_cfg.training.batch_size, 1)
    # Eval loss holds logits + log-softmax: of the scored positions only (in chunks) for plain-head models
    # (models/inference.py), of every position otherwise.
    eval_positions = eval_rows * seq_peak
    if shape.architecture in PLAIN_HEAD_MODELS:
        eval_positions = min(int(eval_positions * workload.trained_share) + 1, SCORE_CHUNK_POSITIONS)
    # Evaluation runs in model.dtype (a base held in bf16 for training is back in it).
    eval_peak = static - sum(c.bytes for c in components if c.name == "optimizer") - weights + loaded + \
        2 * eval_positions * shape.vocab * 4
    phases = {"load": load_peak, "train": train_peak, "eval": eval_peak}
    peak = max(phases.values())

    # --- time
    parts, flops, traffic = _step_cost(run_cfg, shape, workload, device, trainable, weights, activations, logits,
                                       head_trained, blocks)
    # "forward share" is one forward's time (for the evaluation-loss passes), not a part of the step.
    seconds_per_step = sum(v for k, v in parts.items() if k != "forward share")
    batches = workload.batches or [(training.batch_size, run_cfg.data.max_length, 0)]
    passes_per_epoch = len(batches)
    steps_per_epoch = max(1, math.ceil(passes_per_epoch / training.gradient_accumulation_steps))
    steps = training.max_steps if training.max_steps > 0 else max(1, math.ceil(training.epochs * steps_per_epoch))
    ga = training.gradient_accumulation_steps
    padded = sum(r * p for r, p, _ in batches) / passes_per_epoch * ga
    real = sum(t for _, _, t in batches) / passes_per_epoch * ga
    trained_tokens = sum(workload.trained) / max(1, passes_per_epoch) * ga
    evals = steps // training.eval_every_steps if run_cfg.data.validation else 0
    eval_seconds = evals * parts.get("forward share", 0.0)
    total = steps * seconds_per_step + eval_seconds
    if objective == "rl":
        notes.append("online RL: sampling the completions is not modelled (only one training forward/backward)")
    if objective in ("kto", "reward", "orpo", "rl"):
        notes.append(f"objective {objective}: memory of the LM head modelled as full logits (its trainer does not "
                     "use TRL's tiled head)")
    return Plan(device=device.name, device_source=device.source, memory_bytes=device.memory_bytes,
                components=components, phases=phases, peak_bytes=peak, fits=peak <= device.memory_bytes,
                seconds_per_step=seconds_per_step, time_parts={k: v for k, v in parts.items() if k != "forward share"},
                steps=steps, total_seconds=total, tokens_per_step=padded, real_tokens_per_step=real,
                trained_tokens_per_step=trained_tokens, flops_per_step=flops, trainable_params=trainable,
                total_params=shape.total_params, notes=notes)


# ------------------------------------------------------------------------------------------------ time


def _step_cost(run_cfg, shape: ModelShape, workload: Workload, device: Device, trainable: int, weights: float,
               activations: float, logits: float, head_trained: bool, blocks: int) -> tuple[dict, float, float]:
    training, method_cfg, objective = run_cfg.training, run_cfg.method, run_cfg.objective.name
    batches = workload.batches or [(training.batch_size, run_cfg.data.max_length, 0)]
    ga = training.gradient_accumulation_steps
    rows = sum(b[0] for b in batches) / len(batches)
    seq = sum(b[1] for b in batches) / len(batches)
    tokens = rows * seq * ga
    block_params = shape.block_params
    attention = 4 * seq * shape.hidden * shape.layers  # QK^T and AV per token, forward
    forward = (2 * block_params + attention) * tokens
    full = method_cfg.name == "full"
    if method_cfg.name == "freeze":
        share = blocks / max(shape.layers, 1)
        backward = forward * share + 2 * trainable * tokens  # gradients only through the trained top blocks
    else:
        backward = forward + (2 * block_params * tokens if full else 4 * trainable * tokens)
    # LM head: positions scored - the loss-carrying ones with SFT's trained-positions loss (any device,
    # train/trained_positions.py) or TRL's Triton head on GPU, all of them otherwise.
    positions = rows * (seq - 1) * ga
    if trained_positions_path(run_cfg) or (device.kind == "gpu" and objective in CHUNKED_LM_HEAD_OBJECTIVES):
        positions *= workload.trained_share
    head_unit = 2 * shape.hidden * shape.vocab * positions
    head = head_unit * (3 + (1 if head_trained else 0))  # forward, recompute, input grad (+ weight grad)
    # Weight gradients (dW = x^T dy) reach a lower share of peak than the forward's matmuls on a CPU.
    weight_grad = (2 * block_params * tokens if full else 0) + (head_unit if head_trained else 0)
    recomputed_share = checkpointed_blocks(training, blocks) / max(blocks, 1)
    flops = forward + backward + head + forward * recomputed_share
    if objective in REFERENCE_OBJECTIVES:
        flops += forward + head_unit  # the reference model's forward over the same sequences
    dtype = "bfloat16" if training.mixed_precision == "bf16" or run_cfg.frozen_base_in_bf16() else run_cfg.model.dtype
    if method_cfg.name == "qlora":
        dtype = method_cfg.qlora.compute_dtype or dtype
    rate = device.step_flops(dtype)
    matmul_s = (flops - weight_grad) / rate + weight_grad / (rate * device.weight_grad_efficiency)
    # Bytes moved outside the matmuls' own reuse: weights read per pass, activations written and read back,
    # logit tiles swept by the elementwise log-softmax passes, the optimizer's read-modify-write.
    passes = 2 + recomputed_share + (1 if objective in REFERENCE_OBJECTIVES else 0)
    if method_cfg.name == "qlora":
        # Every pass dequantises the 4-bit linears into a full-precision copy (read codes, write fp32).
        passes_bytes = weights * passes + (4 + 0.5) * block_params * passes
    else:
        passes_bytes = weights * passes
    scale = tokens / max(rows * max(b[1] for b in batches), 1)  # average pass vs the peak pass
    act_traffic = 3 * activations * scale
    tile_traffic = 12 * positions * shape.vocab * 4 if device.kind == "cpu" else 4 * positions * shape.vocab * 2
    optimizer = trainable * 4 * 8
    traffic = passes_bytes + act_traffic + tile_traffic + optimizer
    memory_s = traffic / device.bandwidth
    overhead = device.step_overhead_per_layer_s * shape.layers * passes * ga
    parts = {"matmul": matmul_s, "memory": memory_s, "overhead": overhead,
             "forward share": (forward + head_unit) / rate}
    return parts, flops, traffic
