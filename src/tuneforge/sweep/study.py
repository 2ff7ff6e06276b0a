"""Run a sweep: an Optuna study whose trials are ordinary `tuneforge train` runs.

    runs/sweeps/<study>/study.db          the study (SQLite; --storage URL to share it between machines)
    runs/sweeps/<study>/leaderboard.html  leaderboard.json  best.yaml
    runs/<study>-t000/ ...                one normal run directory per trial, lineage in its manifest

Each trial applies its parameters as dotted overrides to the config (the same loader `tuneforge train` uses) and
calls the one fine-tuning recipe. Its value is the tuned model's METRIC in the run's eval/results.json. A trainer
callback reports the validation loss at each evaluation, so the pruner can stop a weak trial before it spends its
steps; the run is then marked "pruned". A trial this host was running when its process died (SIGKILL, power) is
marked failed and queued again with the same parameters the next time the sweep starts.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, RunError
from tuneforge.sweep.space import ParamSpec, check_against_config, grid_size, override


@dataclass
class SweepSettings:
    config: Path
    params: list[ParamSpec]
    metric: str
    direction: str | None = None          # None: from the metric registry (higher_is_better)
    trials: int | None = None             # None: the whole grid (required for ranges)
    budget_s: float | None = None         # stop starting trials once this much wall time is spent
    name: str | None = None               # study name; default: the config file's stem
    storage: str | None = None            # database URL; default: SQLite in the sweep folder
    out: Path | None = None               # sweep folder; default: <output.dir>/sweeps/<name>
    overrides: list[str] = field(default_factory=list)  # fixed overrides for every trial
    pruner: str = "median"                # median | none | threshold
    prune_threshold: float | None = None  # threshold pruner: stop a trial whose eval loss exceeds this
    seed: int = 0


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("`tuneforge sweep` needs Optuna", hint="pip install 'tuneforge[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def resolve_direction(metric: str, direction: str | None) -> str:
    from tuneforge.eval import registry

    info = registry.get(metric)  # unknown names raise ConfigError listing the known ones
    if info.kind == "code" or (info.kind == "check" and "training run" not in info.produced_by):
        raise ConfigError(f"--metric {metric!r}: a {info.kind} metric is not written by a training run",
                          hint=f"it comes from {info.how_to_produce()}; sweep on an item/label metric or "
                               "validation_loss")
    if info.kind == "label":
        raise ConfigError(f"--metric {metric!r}: a label metric needs a label task, and a training run scores "
                          "generated answers", hint="sweep on exact_match_norm (one-word answers) or exact_match")
    if direction is None:
        return "maximize" if info.higher_is_better else "minimize"
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"--direction {direction!r}: use maximize or minimize")
    return direction


def _check_metric_is_produced(metric: str, cfg) -> None:
    """A metric the run's eval does not compute would fail every trial at the very end; say so now."""
    from tuneforge.eval import registry

    if registry.get(metric).kind == "check":  # written by training from the validation split
        if not cfg.data.validation:
            raise ConfigError(f"--metric {metric!r} needs data.validation in the config")
        return
    if cfg.eval.metrics and metric not in registry.expand(cfg.eval.metrics):
        raise ConfigError(f"--metric {metric!r} is not among the config's eval.metrics "
                          f"({', '.join(cfg.eval.metrics)})", hint=f"add it: --set eval.metrics=[{metric}]")


class _PruningCallback:
    """Feeds each evaluation's eval_loss to the trial and stops training when the pruner says so."""

    def __new__(cls, trial, direction: str):
        from transformers import TrainerCallback

        optuna = _optuna()

        class Pruned(optuna.TrialPruned):
            run_status = "pruned"  # read by the recipe's Runner when it writes the manifest

        class Callback(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                loss = (metrics or {}).get("eval_loss")
                if loss is None:
                    return
                # The study's direction is the objective metric's; intermediate values must go the same way, so
                # a maximised metric gets the negated loss (lower loss = higher value).
                trial.report(float(loss) if direction == "minimize" else -float(loss), state.global_step)
                trial.set_user_attr("last_eval_loss", float(loss))
                if trial.should_prune():
                    raise Pruned(f"pruned at step {state.global_step}: validation loss {float(loss):.4f}")

        return Callback()


def make_pruner(settings: SweepSettings, direction: str):
    optuna = _optuna()
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "threshold":
        if settings.prune_threshold is None:
            raise ConfigError("--pruner threshold needs --prune-above LOSS")
        limit = settings.prune_threshold
        return (optuna.pruners.ThresholdPruner(upper=limit) if direction == "minimize"
                else optuna.pruners.ThresholdPruner(lower=-limit))
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    raise ConfigError(f"--pruner {settings.pruner!r}: use median, threshold or none")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_dead_trials(study, runs_dir: Path, console) -> list[int]:
    """Trials cut short by a kill: ones this host started whose process is gone (SIGKILL, power) and ones stopped
    with Ctrl-C. They are marked failed (trial and run) and queued again with the same parameters."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    host, requeued = socket.gethostname(), []
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("requeued_from") for t in trials}
    for trial in trials:
        if trial.state == states.RUNNING:
            owner = trial.user_attrs.get("owner") or {}
            if owner.get("host") != host or _pid_alive(int(owner.get("pid", -1))):
                continue  # another machine's trial (shared storage) or one still running here
            study._storage.set_trial_state_values(trial._trial_id, state=states.FAIL)
        elif not (trial.state == states.FAIL and trial.user_attrs.get("interrupted")) or trial.number in retried:
            continue
        run_name = trial.user_attrs.get("run")
        if run_name:
            _mark_run(runs_dir / run_name, status="failed", error="the sweep was killed during this trial; its "
                      "parameters were queued again")
        # The retry keeps the grid point (system attrs) so a grid sampler does not pick it a second time.
        study.add_trial(optuna.trial.create_trial(
            state=states.WAITING, params=trial.params, distributions=trial.distributions,
            system_attrs={**trial.system_attrs, "requeued_from": trial.number},
        ))
        requeued.append(trial.number)
        console.print(f"[yellow]note:[/] trial {trial.number} was killed while running; queued again")
    return requeued


def _mark_run(path: Path, **fields) -> None:
    from tuneforge.runs.rundir import RunDir, now_iso

    run = RunDir(path)
    if run.manifest.is_file():
        run.update_manifest(**fields, finished_at=run.read_manifest().get("finished_at") or now_iso())


def _finished_states():
    optuna = _optuna()
    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def read_objective(run_path: Path, metric: str) -> tuple[float, dict]:
    path = run_path / "eval" / "results.json"
    if not path.is_file():
        raise RunError(f"{path}: no evaluation results; the run did not evaluate (is data.test set?)")
    results = json.loads(path.read_text())
    summary = (results.get("models", {}).get("tuned") or {}).get("summary") or {}
    if summary.get(metric) is None:
        raise RunError(f"{path}: models.tuned.summary has no {metric!r}",
                       hint=f"it has: {', '.join(sorted(summary)) or 'nothing'}")
    return float(summary[metric]), summary


def run_sweep(settings: SweepSettings, console, *, trial_console=None) -> dict:
    """Run (or resume) the study; returns the sweep summary that the leaderboard is written from."""
    from tuneforge.config.loader import load_config
    from tuneforge.recipes.finetune import train_from_config
    from tuneforge.sweep.leaderboard import write_outputs

    optuna = _optuna()
    states = optuna.trial.TrialState
    direction = resolve_direction(settings.metric, settings.direction)
    base_cfg = load_config(settings.config, settings.overrides)
    _check_metric_is_produced(settings.metric, base_cfg)
    check_against_config(settings.config, settings.overrides, settings.params)
    name = settings.name or settings.config.stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise ConfigError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only (it names the trial runs)")
    runs_dir = Path(base_cfg.output.dir)
    out = settings.out or runs_dir / "sweeps" / name
    out.mkdir(parents=True, exist_ok=True)
    storage_url = settings.storage or f"sqlite:///{(out / 'study.db').resolve()}"

    n_grid = grid_size(settings.params)
    if n_grid is None and settings.trials is None:
        raise ConfigError("--trials N is needed when a --param is a range (int:, float:, log:)")
    target = min(settings.trials or n_grid, n_grid or settings.trials)
    sampler = (optuna.samplers.GridSampler({s.name: list(s.choices) for s in settings.params}, seed=settings.seed)
               if n_grid is not None else optuna.samplers.TPESampler(seed=settings.seed))
    study = optuna.create_study(study_name=name, storage=storage_url, direction=direction, sampler=sampler,
                                pruner=make_pruner(settings, direction), load_if_exists=True)
    recorded = study.user_attrs.get("metric")
    if recorded and recorded != settings.metric:
        raise ConfigError(f"study {name!r} in {storage_url} optimises {recorded!r}, not {settings.metric!r}",
                          hint="pick another --name for a different objective")
    recorded = study.user_attrs.get("params")
    if recorded and sorted(recorded) != sorted(s.text for s in settings.params):
        # Finished trials of another search space would be counted (and ranked) as this one's.
        raise ConfigError(f"study {name!r} in {storage_url} explores {', '.join(recorded)}, not "
                          f"{', '.join(s.text for s in settings.params)}", hint="pick another --name")
    study.set_user_attr("metric", settings.metric)
    study.set_user_attr("config", str(settings.config))
    study.set_user_attr("params", [s.text for s in settings.params])

    requeue_dead_trials(study, runs_dir, console)
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in _finished_states() for t in trials)
    # A failure that was not a kill is not retried (it would fail again for the same reason); a killed trial
    # was queued again, and its retry counts instead.
    retried = {t.system_attrs.get("requeued_from") for t in trials}
    failures = sum(t.state == states.FAIL and t.number not in retried for t in trials)
    remaining = max(target - done - failures, 0)
    console.print(f"[bold]sweep[/] {name}: {done} trials finished, {remaining} to run "
                  f"({'grid of ' + str(n_grid) if n_grid else 'search space'}; {direction} {settings.metric}); "
                  f"storage {storage_url}")

    def objective(trial) -> float:
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})  # first: see requeue
        values = {spec.name: spec.suggest(trial) for spec in settings.params}
        run_name = f"{name}-t{trial.number:03d}"
        trial.set_user_attr("run", run_name)
        overrides = [*settings.overrides, *(override(k, v) for k, v in values.items()), f"output.name={run_name}"]
        cfg = load_config(settings.config, overrides)
        if (runs_dir / run_name).exists():  # never write this study's lineage into someone else's run
            raise RunError(f"run directory {runs_dir / run_name} already exists",
                           hint="a study of this name was deleted but its runs were kept: pick another --name")
        console.print(f"[bold]trial {trial.number}[/] {run_name}: "
                      + ", ".join(f"{k}={v}" for k, v in values.items()))
        lineage = {"study": name, "storage": storage_url, "trial": trial.number, "params": values,
                   "metric": settings.metric, "direction": direction}
        started = time.perf_counter()
        try:
            run = train_from_config(cfg, config_path=str(settings.config), console=trial_console or console,
                                    callbacks=[_PruningCallback(trial, direction)])
            value, summary = read_objective(run.path, settings.metric)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # a kill, not a bad setting: the next start runs it again
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _mark_run(runs_dir / run_name, sweep=lineage)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        if summary.get("validation_loss") is not None:
            trial.set_user_attr("validation_loss", float(summary["validation_loss"]))
        console.print(f"  {settings.metric} = {value:.4f}")
        return value

    def report(study_, trial) -> None:
        if trial.state == states.PRUNED:
            console.print(f"  [yellow]pruned[/] at step {max(trial.intermediate_values, default='?')}")
        elif trial.state == states.FAIL:
            console.print(f"  [red]failed[/] {trial.user_attrs.get('error', '')}")

    started = time.perf_counter()
    stopped_by_budget = False
    if remaining:
        study.optimize(
            objective, n_trials=remaining, timeout=settings.budget_s, catch=(Exception,), gc_after_trial=True,
            callbacks=[optuna.study.MaxTrialsCallback(target, states=_finished_states()), report],
        )
        finished_now = len(study.get_trials(deepcopy=False, states=_finished_states()))
        stopped_by_budget = settings.budget_s is not None and finished_now < target and (
            time.perf_counter() - started >= settings.budget_s)
        if stopped_by_budget:
            console.print(f"[yellow]budget[/] {settings.budget_s:.0f} s spent; no new trials started "
                          f"({finished_now} of {target} finished; run again to continue)")
    summary = write_outputs(study, settings, out=out, runs_dir=runs_dir, direction=direction,
                            storage=storage_url, stopped_by_budget=stopped_by_budget, console=console)
    return summary
