"""`tuneforge sweep`: grid and search-space sweeps over a training config, run as an Optuna study."""
from tuneforge.sweep.space import ParamSpec, parse_budget, parse_param, parse_params
from tuneforge.sweep.study import SweepSettings, run_sweep

__all__ = ["ParamSpec", "SweepSettings", "parse_budget", "parse_param", "parse_params", "run_sweep"]
