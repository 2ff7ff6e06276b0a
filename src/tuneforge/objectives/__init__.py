"""What is optimised. Each objective is one module that prepares its data and builds its (TRL) trainer."""
from __future__ import annotations

from tuneforge.objectives.base import Objective
from tuneforge.objectives.cpt import CPTObjective
from tuneforge.objectives.kto import KTOObjective
from tuneforge.objectives.multitask import MultitaskObjective
from tuneforge.objectives.preference import DPOObjective, ORPOObjective
from tuneforge.objectives.reward import RewardObjective
from tuneforge.objectives.rl import RLObjective
from tuneforge.objectives.sft import SFTObjective

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (SFTObjective, CPTObjective, MultitaskObjective, DPOObjective, KTOObjective, ORPOObjective,
                RewardObjective, RLObjective)
}


def get_objective(config) -> Objective:
    """`config` is the run's ObjectiveConfig."""
    return OBJECTIVES[config.name](config)


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
