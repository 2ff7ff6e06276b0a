"""Printing plans: one table of memory components per device, then time and the verdict."""
from __future__ import annotations

from rich.table import Table

from tuneforge.plan.estimate import GIB, Plan


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def verdict(plan: Plan) -> str:
    share = plan.peak_bytes / plan.memory_bytes if plan.memory_bytes else float("inf")
    word = "[green]fits[/]" if plan.fits else "[bold red]does not fit[/]"
    return f"{word} ({plan.peak_gib:.2f} GiB peak of {plan.memory_bytes / GIB:.1f} GiB, {share:.0%})"


def summary_line(plan: Plan) -> str:
    return (f"[bold]plan[/] {plan.device}: peak {plan.peak_gib:.2f} GiB, {plan.seconds_per_step:.2f} s/step, "
            f"{plan.steps} steps ~ {_duration(plan.total_seconds)}, {plan.tokens_per_step:,.0f} tokens/step "
            f"({plan.real_tokens_per_step:,.0f} non-pad) - " + verdict(plan))


def print_plans(plans: list[Plan], console, *, brief: bool = False) -> None:
    if brief:
        for plan in plans:
            console.print(summary_line(plan), highlight=False)
        return
    for plan in plans:
        table = Table(title=f"{plan.device}: {plan.device_source}", title_justify="left")
        table.add_column("component")
        table.add_column("GiB", justify="right")
        table.add_column("how")
        for component in plan.components:
            table.add_row(component.name, f"{component.bytes / GIB:.3f}", component.how)
        phases = ", ".join(f"{name} {value / GIB:.2f}" for name, value in plan.phases.items())
        table.add_row("[bold]peak[/]", f"[bold]{plan.peak_gib:.3f}[/]", f"largest phase (GiB: {phases})")
        console.print(table)
        parts = ", ".join(f"{name} {value:.3f} s" for name, value in plan.time_parts.items())
        console.print(f"  seconds per step {plan.seconds_per_step:.3f} ({parts}); {plan.flops_per_step / 1e12:.3f} "
                      f"TFLOP per step", highlight=False)
        console.print(f"  tokens per step {plan.tokens_per_step:,.0f} computed, {plan.real_tokens_per_step:,.0f} "
                      f"non-pad, {plan.trained_tokens_per_step:,.0f} trained; {plan.steps} steps, total "
                      f"{_duration(plan.total_seconds)} (training and its evaluation-loss passes; generation "
                      "and export not included)", highlight=False)
        console.print(f"  trainable {plan.trainable_params:,} of {plan.total_params:,} parameters", highlight=False)
        console.print("  " + verdict(plan), highlight=False)
        for note in plan.notes:
            console.print(f"  [dim]note:[/] {note}", highlight=False)
