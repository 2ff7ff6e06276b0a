"""Every method x every objective, generated from the two registries: a new method or objective cannot ship untested.

Each pair is composed exactly as the fine-tuning recipe composes it (objective data -> method base -> objective
model shape -> method wrap -> objective trainer), trained for 2 steps on a tiny model, and must:
- log finite losses;
- change only parameters the method declares trainable (the base stays bit-identical otherwise);
- save and reload: the exported artifact rebuilt on a fresh base gives the trained model's logits.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tuneforge.methods import METHODS
from tuneforge.objectives import OBJECTIVES

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = {name: REPO / "examples" / f"objective-{name}.yaml" for name in OBJECTIVES}
EXAMPLE["sft"] = REPO / "examples" / "lora-contact-extraction.yaml"
PAIRS = [(m, o) for m in sorted(METHODS) for o in sorted(OBJECTIVES)]


def _config(method: str, objective: str, model_dir: Path, out: Path):
    from tuneforge.config.loader import load_config

    overrides = [f"model.source={model_dir}", f"method.name={method}", "training.max_steps=2",
                 "training.batch_size=2", "training.eval_every_steps=100", "training.save_every_steps=100",
                 "training.logging_steps=1", "data.max_length=160", "eval.max_items=2", f"output.dir={out}"]
    if method == "freeze":
        overrides.append("method.freeze.train_last_n_blocks=1")  # its default trains nothing, by design
    if objective == "rl":
        # A random model's completions all score 0 on json_valid: zero advantages, zero gradient, nothing would
        # change. Completion length differs between samples, so length_penalty gives a real learning signal.
        overrides += ["objective.rl.num_generations=2", "objective.rl.max_completion_length=6",
                      "objective.rl.reward=[length_penalty]", "training.learning_rate=1e-2"]
    if objective == "distill":
        # Token mode: its own loss is what must work with every method (sequence mode is SFT on generated rows);
        # the tiny model teaches itself, so the hard-label half of the loss gives the gradient.
        overrides += [f"objective.distill.teacher={model_dir}", "objective.distill.mode=token"]
    cfg = load_config(EXAMPLE[objective], overrides)
    assert cfg.objective.name == objective
    return cfg


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


@pytest.mark.parametrize(("method_name", "objective_name"), PAIRS, ids=[f"{m}-{o}" for m, o in PAIRS])
def test_pair_trains_changes_only_its_parameters_and_round_trips(method_name, objective_name, tiny_model_dir,
                                                                 tmp_path):
    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.objectives import get_objective
    from tuneforge.recipes.export import export_trained

    torch.manual_seed(0)
    refused = OBJECTIVES[objective_name].refused_methods.get(method_name)
    if refused:  # a declared refusal is itself checked: the pair is refused before any run, saying why
        from tuneforge.errors import ConfigError
        from tuneforge.objectives import check_method_allowed

        with pytest.raises(ConfigError, match=f"{method_name} with objective {objective_name}"):
            check_method_allowed(_config(method_name, objective_name, tiny_model_dir, tmp_path))
        return
    cfg = _config(method_name, objective_name, tiny_model_dir, tmp_path)
    resolved = resolve_model(str(tiny_model_dir))
    tokenizer = load_tokenizer(resolved)
    objective, method = get_objective(cfg.objective), get_method(cfg.method)
    prepared = objective.prepare(cfg, tokenizer)
    model = objective.prepare_model(method.load_base(resolved, cfg.model.dtype))
    model = method.apply(model)
    objective.after_method(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer = objective.build_trainer(cfg, model, tokenizer, prepared, tmp_path / "checkpoints", [])
    trainer.train()
    model = objective.after_train(trainer.model)

    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), trainer.state.log_history
    after = dict(model.named_parameters())
    changed = {n for n in before if n in after and not torch.equal(before[n], after[n].detach())}
    assert changed, "training changed no parameter"
    assert changed <= trainable, f"non-trainable parameters changed: {sorted(changed - trainable)[:5]}"

    probe = torch.tensor([tokenizer("Ada works at Analytic Engines.")["input_ids"]])
    expected = _logits(model.eval(), probe)  # dropout off, as in the reloaded model
    # Adapter methods round-trip through their adapter (merging is covered by the methods' conformance suite);
    # full and freeze through the merged folder, which is all they save.
    exports = export_trained(method, model, tokenizer, adapter_dir=tmp_path / "adapter",
                             merged_dir=None if method.has_adapter else tmp_path / "merged", lineage={},
                             console=_quiet())
    rebuilt = _reload(method, objective, resolved, cfg, exports, tmp_path)
    assert torch.allclose(_logits(rebuilt, probe), expected, atol=1e-4 if method_name != "qlora" else 5e-3)


def _reload(method, objective, resolved, cfg, exports: dict, tmp_path: Path):
    """The artifact a user would load: the adapter on a fresh base, else the merged folder."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if "adapter" in exports:
        from peft import PeftModel

        base = objective.prepare_model(method.load_base(resolved, cfg.model.dtype))
        return PeftModel.from_pretrained(base, exports["adapter"]).eval()
    loader = AutoModelForSequenceClassification if objective.name == "reward" else AutoModelForCausalLM
    return loader.from_pretrained(exports["merged"]).eval()


def _quiet():
    from tuneforge.console import make_console

    return make_console(quiet=True)
