"""A model's shape read from its config.json and safetensors headers: no weight is loaded.

Parameter counts come from the tensor shapes in the safetensors headers (exact) when the folder has them, else from
the config with the usual decoder formula (estimated, and said so). Every number carries where it came from, so a
plan can say which parts are measured and which are guessed.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

# Config keys architectures use for the same quantity, in the order they are tried.
_KEYS = {
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
    "vocab": ("vocab_size", "padded_vocab_size"),
}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_EMBEDDING_NAMES = ("embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings", "shared")
_HEAD_NAMES = ("lm_head", "embed_out", "output")
_ATTENTION_MARKERS = ("attn", "attention")
_BLOCK_INDEX = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")
# A gated MLP (Llama, Mistral, Qwen, Gemma...) has three matrices per block, a plain one (GPT-2, OPT) two.
_GATED_ACTIVATIONS = ("silu", "swiglu", "geglu", "gelu_pytorch_tanh")


@dataclass
class LinearGroup:
    """All linear layers sharing one leaf name (q_proj, ...): (in_features, out_features) per occurrence."""

    name: str
    in_attention: bool
    shapes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ModelShape:
    architecture: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    total_params: int
    embedding_params: int          # input embedding matrix (no FLOPs: a lookup)
    head_params: int               # output projection; with tied embeddings it is the embedding matrix
    linears: dict[str, LinearGroup] = field(default_factory=dict)   # leaf name -> linear layers inside the blocks
    file_dtype_bytes: int | None = None
    gated_mlp: bool = True
    notes: list[str] = field(default_factory=list)   # what was estimated rather than read, and how

    @property
    def block_params(self) -> int:
        """Parameters that take part in every token's matmuls (everything but the input embedding and the head)."""
        extra = 0 if self.tied else self.head_params
        return self.total_params - self.embedding_params - extra

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // max(self.heads, 1)


def _pick(config: dict, quantity: str):
    for candidate in (config, config.get("text_config") or {}):
        for key in _KEYS[quantity]:
            value = candidate.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def read_safetensors_header(path: Path) -> dict:
    """{tensor name: {"dtype", "shape"}} from a .safetensors file's JSON header (8-byte length prefix)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def safetensors_tensors(folder: Path) -> dict | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    tensors: dict = {}
    for file in files:
        tensors.update(read_safetensors_header(file))
    return tensors


def shape_from_folder(folder: str | Path) -> ModelShape:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return shape_from_config(config, safetensors_tensors(folder))


def shape_from_config(config: dict, tensors: dict | None = None) -> ModelShape:
    """The shape from a config.json dict, with exact counts from `tensors` (safetensors headers) when given."""
    notes: list[str] = []
    architecture = (config.get("architectures") or [config.get("model_type") or "unknown"])[0]
    hidden = _pick(config, "hidden")
    layers = _pick(config, "layers")
    if hidden is None or layers is None:
        from tuneforge.errors import ConfigError

        raise ConfigError(f"the model config ({architecture}) names no hidden size or layer count",
                          hint="the planner needs hidden_size and num_hidden_layers (or n_embd / n_layer)")
    heads = _pick(config, "heads") or max(1, hidden // 64)
    if _pick(config, "heads") is None:
        notes.append(f"attention heads not in the config: assumed {heads} (hidden / 64)")
    kv_heads = _pick(config, "kv_heads") or heads
    intermediate = _pick(config, "intermediate")
    if intermediate is None:
        intermediate = 4 * hidden
        notes.append(f"MLP width not in the config: assumed 4 x hidden = {intermediate}")
    vocab = _pick(config, "vocab") or 32000
    if _pick(config, "vocab") is None:
        notes.append("vocabulary size not in the config: assumed 32000")
    tied = bool(config.get("tie_word_embeddings", True))
    activation = str(config.get("hidden_act") or config.get("activation_function") or "").lower()
    gated = activation in _GATED_ACTIVATIONS or "gate" in activation
    shape = ModelShape(architecture, hidden, layers, heads, kv_heads, intermediate, vocab, tied, 0, 0, 0,
                       gated_mlp=gated, notes=notes)
    if tensors:
        _fill_from_tensors(shape, tensors)
    else:
        _fill_from_formula(shape)
    return shape


def _fill_from_tensors(shape: ModelShape, tensors: dict) -> None:
    total = embedding = head = 0
    byte_sizes = []
    block_indices = set()
    for name, info in tensors.items():
        count = 1
        for dim in info["shape"]:
            count *= dim
        total += count
        byte_sizes.append(_DTYPE_BYTES.get(info.get("dtype", "F32"), 4))
        parts = name.split(".")
        match = _BLOCK_INDEX.search(f".{name}")
        if match:
            block_indices.add(int(match.group(1)))
        if any(part in _EMBEDDING_NAMES for part in parts) and len(info["shape"]) == 2:
            embedding += count
        elif parts[0] in _HEAD_NAMES or (len(parts) > 1 and parts[-2] in _HEAD_NAMES):
            head += count
        elif match and len(info["shape"]) == 2 and parts[-1] == "weight":
            leaf = parts[-2]
            group = shape.linears.setdefault(
                leaf, LinearGroup(leaf, any(m in p.lower() for p in parts[:-2] for m in _ATTENTION_MARKERS)))
            out_features, in_features = info["shape"]
            group.shapes.append((in_features, out_features))
    shape.total_params, shape.embedding_params = total, embedding
    shape.head_params = head if head else (embedding if shape.tied else 0)
    if not head and not shape.tied:
        shape.notes.append("no separate output head in the weights although the config says untied: treated as tied")
        shape.tied = True
    if block_indices and len(block_indices) != shape.layers:
        shape.notes.append(f"weights hold {len(block_indices)} blocks, the config says {shape.layers}: "
                           "using the weights")
        shape.layers = len(block_indices)
    if byte_sizes:
        shape.file_dtype_bytes = max(set(byte_sizes), key=byte_sizes.count)


def _fill_from_formula(shape: ModelShape) -> None:
    """No weights to read (hub id not cached, or .bin weights): the decoder formula, noted as an estimate."""
    h, kv = shape.hidden, shape.kv_dim
    mlp_mats = 3 if shape.gated_mlp else 2
    per_block = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                 "up_proj": (h, shape.intermediate), "down_proj": (shape.intermediate, h)}
    if shape.gated_mlp:
        per_block["gate_proj"] = (h, shape.intermediate)
    for leaf, dims in per_block.items():
        shape.linears[leaf] = LinearGroup(leaf, leaf in ("q_proj", "k_proj", "v_proj", "o_proj"),
                                          [dims] * shape.layers)
    block = 2 * h * h + 2 * h * kv + mlp_mats * h * shape.intermediate + 2 * h  # + two norm weights
    shape.embedding_params = shape.vocab * h
    shape.head_params = shape.embedding_params if shape.tied else shape.vocab * h
    shape.total_params = shape.layers * block + shape.embedding_params + h + (0 if shape.tied else shape.head_params)
    shape.notes.append("parameter count from the config with the Llama-style decoder formula (no safetensors "
                       "weights to read): exact for Llama/Mistral/Qwen-like models, approximate for others")


def lora_trainable(shape: ModelShape, targets, r: int) -> tuple[int, list[str]]:
    """LoRA parameters: r x (in + out) for every adapted linear layer; `targets` is a name list or a preset."""
    if targets == "all-linear":
        groups = list(shape.linears.values())
    elif targets == "attention":
        groups = [g for g in shape.linears.values() if g.in_attention]
    else:
        groups = [shape.linears[name] for name in targets if name in shape.linears]
    return sum(r * (i + o) for g in groups for i, o in g.shapes), [g.name for g in groups]
