"""Fairness checks of an evaluation: metrics disaggregated by cohort (`cohorts`) and counterfactual evaluation,
the same items asked again with swapped names and attribute terms (`counterfactual`). Both write into the one
results.json (see `tuneforge.eval.pipeline`) and are gateable: `cohort_gap:METRIC`, `counterfactual_flip_rate`."""


def print_fairness(results: dict, console) -> None:
    """One console line per model for the counterfactual flip rate and each metric's largest cohort gap."""
    for name, side in results["models"].items():
        block = side.get("counterfactual")
        if block and block["flip_rate"]:
            rate = block["flip_rate"]
            console.print(f"{name}: {block['n_changed']} of {block['n_applicable']} answers changed with swapped "
                          f"terms: flip rate {rate['mean']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}]")
        for metric, gap in ((side.get("cohorts") or {}).get("gaps") or {}).items():
            console.print(f"{name}: {metric} cohort gap {gap['gap']:.3f} [{gap['ci_low']:.3f}, {gap['ci_high']:.3f}] "
                          f"({gap['highest']} - {gap['lowest']}, {gap['n_cohorts']} cohorts)")
