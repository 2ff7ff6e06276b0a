"""What is optimised. Each objective is one module that prepares its data and builds its (TRL) trainer."""
from __future__ import annotations

from tuneforge.objectives.base import Objective
from tuneforge.objectives.cpt import CPTObjective
from tuneforge.objectives.distill import DistillObjective
from tuneforge.objectives.kto import KTOObjective
from tuneforge.objectives.multitask import MultitaskObjective
from tuneforge.objectives.preference import DPOObjective, ORPOObjective
from tuneforge.objectives.reward import RewardObjective
from tuneforge.objectives.rl import RLObjective
from tuneforge.objectives.sft import SFTObjective

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (SFTObjective, CPTObjective, MultitaskObjective, DPOObjective, KTOObjective, ORPOObjective,
                RewardObjective, RLObjective, DistillObjective)
}


def check_method_allowed(run_cfg) -> None:
    """Refuse a method the objective declares it cannot train (`Objective.refused_methods`), naming both; called
    by `config validate` and before a run directory is created."""
    from tuneforge.errors import ConfigError

    refused = OBJECTIVES[run_cfg.objective.name].refused_methods.get(run_cfg.method.name)
    if refused:
        raise ConfigError(f"method.name: {run_cfg.method.name} with objective {run_cfg.objective.name}: {refused}")


def get_objective(config) -> Objective:
    """`config` is the run's ObjectiveConfig."""
    return OBJECTIVES[config.name](config)


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
