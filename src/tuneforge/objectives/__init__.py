"""What is optimised. Each objective is one module that builds a trainer from already-rendered data."""
from __future__ import annotations

from tuneforge.objectives.sft import SFTObjective

OBJECTIVES = {SFTObjective.name: SFTObjective}


def get_objective(config):
    """`config` is the run's ObjectiveConfig."""
    return OBJECTIVES[config.name](config)


__all__ = ["OBJECTIVES", "get_objective"]
