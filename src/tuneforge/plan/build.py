"""From a run config to plans, before any weight is loaded, and the check `tuneforge train` runs at its start.

The model is resolved through the same path training takes (`tuneforge.models.sources.resolve_model`; a catalog
model is fetched and converted once into the cache), then only its config.json and safetensors headers are read.
The tokenizer is loaded (cheap) to tokenise the training data exactly as the objective renders it.
"""
from __future__ import annotations

from tuneforge.errors import ConfigError
from tuneforge.plan.devices import get_device
from tuneforge.plan.estimate import GIB, Plan, estimate
from tuneforge.plan.shape import ModelShape, shape_from_config, shape_from_folder


def model_shape(resolved) -> ModelShape:
    from pathlib import Path

    folder = Path(resolved.path)
    if (folder / "config.json").is_file():
        return shape_from_folder(folder)
    # A hub id: the config comes from the hub cache or the hub; no weights to read headers from.
    from transformers import AutoConfig

    return shape_from_config(AutoConfig.from_pretrained(resolved.path).to_dict())


def make_plans(run_cfg, devices: list[str], base_ref, *, console=None, recalibrate: bool = False) -> list[Plan]:
    """Plans for `devices`; `base_ref` is the run's base ModelRef as the caller resolved it (the recipe's
    `base_model_ref`: registry references are resolved above this layer)."""
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.plan.workload import measure_workload

    resolved = resolve_model(base_ref.model_path)
    shape = model_shape(resolved)
    tokenizer = load_tokenizer(resolved, run_cfg.model.chat_template_path)
    workload = measure_workload(run_cfg, tokenizer)
    plans = []
    for name in devices:
        if name.strip().lower() == "this":
            from tuneforge.plan.calibrate import this_machine

            device = this_machine(recalibrate=recalibrate, console=console)
        else:
            device = get_device(name)
        plan = estimate(run_cfg, shape, workload, device)
        plan.notes.insert(0, f"sequence lengths: {workload.source} ({workload.examples} examples, longest "
                             f"{workload.max_length} tokens)")
        plans.append(plan)
    return plans


def refusal(plan: Plan) -> ConfigError:
    biggest = sorted(plan.components, key=lambda c: -c.bytes)[:3]
    parts = ", ".join(f"{c.name} {c.bytes / GIB:.2f} GiB" for c in biggest)
    return ConfigError(
        f"the plan says this run does not fit on this machine: peak {plan.peak_gib:.2f} GiB "
        f"({parts}, ...) against {plan.memory_bytes / GIB:.2f} GiB of memory",
        hint="lower training.batch_size or data.max_length, set training.gradient_checkpointing: true, use "
             "method lora/qlora, or run anyway with --no-plan-check (training.plan_check: false)")


def check_before_training(run_cfg, console, base_ref) -> Plan | None:
    """Print this machine's plan and refuse a run that cannot fit (unless training.plan_check is false).

    Multi-process runs are not checked: each rank holds its own share, which this single-process plan does not model.
    """
    from tuneforge.plan.render import print_plans
    from tuneforge.train.launch import world_size

    if world_size() > 1:
        return None
    try:
        plan = make_plans(run_cfg, ["this"], base_ref, console=console)[0]
    except Exception as error:  # noqa: BLE001 - a plan that cannot be made must not stop a run that can
        from rich.markup import escape

        console.print(f"[yellow]plan[/] unavailable ({escape(type(error).__name__ + ': ' + str(error))[:300]}); "
                      "training without the memory check", highlight=False)
        return None
    print_plans([plan], console, brief=True)
    if not plan.fits:
        if run_cfg.training.plan_check:
            raise refusal(plan)
        console.print("[yellow]plan[/] does not fit, running anyway (training.plan_check is false)")
    return plan
