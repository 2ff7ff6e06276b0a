"""`tuneforge data counterfactual`: copies of rows with demographic terms or names swapped (bias audit).

Registered on the `tuneforge data` app (tuneforge.cli.data imports this module); the work lives in
tuneforge.data.fairness. Class balance by cohort is a section of `tuneforge data audit`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli.data import _FORMAT_HELP, _load, _write_jsonl, app
from tuneforge.console import make_console


@app.command()
def counterfactual(
    data: str = typer.Argument(..., help="Dataset file (any supported format) or quickstart:NAME."),
    out: str = typer.Option(..., "--out", "-o", help="Counterfactual rows (JSONL, the normalised format); each "
                            "carries meta.counterfactual = {source: file:line, swaps: [{group, from, to, count}]}."),
    swaps: str = typer.Option("default", "--swaps", help="Swap list YAML (default: the shipped "
                              "tuneforge/assets/fairness/swaps.yaml: gender terms and first names)."),
    groups: Optional[str] = typer.Option(None, "--groups", help="Comma-separated swap groups to apply (default: "
                                         "every group of the list)."),
    include_original: bool = typer.Option(False, "--include-original", help="Write every original row too (each "
                                          "followed by its copy): an augmented training set."),
    keep_unchanged: bool = typer.Option(False, "--keep-unchanged", help="Also write rows no swap applied to "
                                        "(unchanged copies); by default they are counted and listed, not written."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
) -> None:
    """Counterfactual copies: every listed term swapped with its counterpart (he <-> she, Emily <-> Lakisha),
    whole words, case kept, in all text fields; which swaps applied is recorded per row.

    Example: tuneforge data counterfactual train.jsonl --swaps swaps.yaml --out train.counterfactual.jsonl
    """
    from tuneforge.data.fairness.swaps import counterfactual_row, load_swaps
    from tuneforge.data.text import format_lines

    swap_list = load_swaps(swaps)
    if groups:
        swap_list = swap_list.restricted([g.strip() for g in groups.split(",") if g.strip()])
    loaded = _load(data, data_format, False, out)
    rows, unchanged, by_swap = [], [], {}
    for i, row in enumerate(loaded.rows):
        copy, applied = counterfactual_row(row, swap_list, loaded.where(i))
        if include_original:
            rows.append(row)
        if applied or keep_unchanged:
            rows.append(copy)
        if not applied:
            unchanged.append(loaded.line_numbers[i])
        for swap in applied:
            key = f"{swap['group']}: {swap['from']} -> {swap['to']}"
            by_swap[key] = by_swap.get(key, 0) + swap["count"]
    _write_jsonl(Path(out), rows)
    console = make_console(stderr=False)
    changed = len(loaded.rows) - len(unchanged)
    console.print(f"{len(loaded.rows)} rows: {changed} with swapped terms, {len(unchanged)} without"
                  + (f" (lines {format_lines(unchanged)}; "
                     + ("written unchanged)" if keep_unchanged else "not written, --keep-unchanged writes them)")
                     if unchanged else "") + f"\n{len(rows)} rows -> {out}")
    for key, count in sorted(by_swap.items(), key=lambda kv: -kv[1])[:20]:
        console.print(f"  {key}: {count}")
