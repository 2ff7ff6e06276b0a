"""`tuneforge sweep` input checking and pruning logic, without training anything."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.errors import ConfigError
from tuneforge.sweep.space import check_against_config, grid_size, override, parse_budget, parse_param, parse_params


def test_grid_and_range_params_parse_to_values_the_loader_reads_back():
    lr = parse_param("training.learning_rate=1e-4,2e-4,4.0e-4")
    assert lr.is_grid and lr.choices == (1e-4, 2e-4, 4e-4)  # YAML 1.1 alone would read 1e-4 as a string
    rank = parse_param("method.lora.r=int:4..32")
    assert (rank.kind, rank.low, rank.high, rank.is_grid) == ("int", 4, 32, False)
    assert parse_param("training.learning_rate=log:1e-5..1e-3").kind == "log"
    assert parse_param("method.name=lora,full").choices == ("lora", "full")
    assert override("training.learning_rate", 1e-4) == "training.learning_rate=0.0001"
    assert grid_size(parse_params(["a=1,2", "b=x,y,z"])) == 6
    assert grid_size(parse_params(["a=1,2", "b=int:1..3"])) is None
    assert parse_budget("30m") == 1800 and parse_budget("2h") == 7200 and parse_budget("90") == 90


@pytest.mark.parametrize("text, problem", [
    ("training.learning_rate", "expected KEY=VALUES"),
    ("training.learning_rate=", "training.learning_rate: no values"),
    ("training.epochs=1,,3", "empty value"),
    ("method.lora.r=int:32..4", "must be below"),
    ("training.learning_rate=log:0..1e-3", "positive low end"),
    ("method.lora.r=exp:1..4", "unknown range kind 'exp'"),
    ("method.lora.r=int:1.5..4", "whole numbers"),
    ("training.epochs=[1,3]", "without brackets"),
    ("training.epochs=1,1", "listed twice"),
])
def test_bad_param_syntax_names_the_param(text, problem):
    with pytest.raises(ConfigError) as info:
        parse_param(text)
    assert f"--param {text!r}" in info.value.message and problem in info.value.message


def test_the_same_key_twice_and_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="already swept"):
        parse_params(["training.epochs=1,2", "training.epochs=3,4"])
    for bad in ("soon", "-5m", "0"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {source: smollm2-135m}\ndata: {train: t.jsonl, validation: v.jsonl, test: x.jsonl}\n"
                    f"output: {{dir: {tmp_path / 'runs'}}}\n")
    return path


def test_unknown_keys_and_wrong_types_fail_before_any_trial(config):
    with pytest.raises(ConfigError) as info:
        check_against_config(config, [], parse_params(["training.learing_rate=1e-4,2e-4"]))
    assert "--param 'training.learing_rate=1e-4,2e-4'" in info.value.message
    assert "training.learing_rate: unknown key" in info.value.message
    with pytest.raises(ConfigError, match="training.epochs"):
        check_against_config(config, [], parse_params(["training.epochs=1,many"]))


@pytest.mark.parametrize("args, message", [
    (["--param", "training.epochs=1,2", "--metric", "no_such_metric"], "unknown metric 'no_such_metric'"),
    (["--param", "training.epochs", "--metric", "exact_match"], "--param 'training.epochs'"),
    (["--param", "method.lora.r=int:4..8", "--metric", "exact_match"], "--trials N is needed"),
    (["--param", "training.nope=1,2", "--metric", "exact_match"], "training.nope: unknown key"),
    (["--param", "training.epochs=1,2", "--metric", "refusal_rate"], "not written by a training run"),
])
def test_cli_reports_bad_input_without_a_traceback(config, args, message):
    result = CliRunner().invoke(app, ["sweep", str(config), *args])
    assert result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_pruning_callback_stops_a_trial_whose_validation_loss_is_worse():
    """The pruner sees the validation loss with the study's direction: for a maximised metric a higher loss
    must still count as worse (it is reported negated)."""
    import optuna

    from tuneforge.sweep.study import _PruningCallback

    class State:
        global_step = 2

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for loss in (1.0, 1.2):  # two finished trials whose validation loss was about 1.1 at step 2
        trial = study.ask()
        _PruningCallback(trial, "maximize").on_evaluate(None, State(), None, metrics={"eval_loss": loss})
        study.tell(trial, 0.5)
    good = study.ask()
    _PruningCallback(good, "maximize").on_evaluate(None, State(), None, metrics={"eval_loss": 0.8})  # no raise
    bad = study.ask()
    with pytest.raises(optuna.TrialPruned) as info:
        _PruningCallback(bad, "maximize").on_evaluate(None, State(), None, metrics={"eval_loss": 3.0})
    assert info.value.run_status == "pruned" and "validation loss 3.0000" in str(info.value)


def test_shipped_routing_example_and_its_sweep_command_check_out(monkeypatch):
    """The example's documented sweep passes every up-front check, and its bundled data is a balanced 5-way task."""
    import json
    import shlex
    from collections import Counter

    from tuneforge.config.loader import load_config
    from tuneforge.data.formats import resolve_data_path
    from tuneforge.sweep.study import _check_metric_is_produced, resolve_direction

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    example = repo / "examples/sweep-routing.yaml"
    lines = example.read_text().splitlines()
    argv = shlex.split(lines[0][2:] + " " + lines[1][2:])
    assert argv[:3] == ["tuneforge", "sweep", "examples/sweep-routing.yaml"]
    params = parse_params([argv[i + 1] for i, a in enumerate(argv) if a == "--param"])
    metric = argv[argv.index("--metric") + 1]
    cfg = load_config(example)
    check_against_config(example, [], params)
    assert resolve_direction(metric, None) == "maximize"
    _check_metric_is_produced(metric, cfg)
    for split, per_team in (("train", 24), ("validation", 4), ("test", 8)):
        rows = [json.loads(x) for x in Path(resolve_data_path(getattr(cfg.data, split))).read_text().splitlines()]
        teams = Counter(r["completion"].strip() for r in rows)
        assert teams == {t: per_team for t in ("billing", "technical", "sales", "account", "shipping")}


def test_label_metrics_are_refused_for_training_runs():
    from tuneforge.sweep.study import resolve_direction

    with pytest.raises(ConfigError, match="label metric"):
        resolve_direction("macro_f1", None)
    assert resolve_direction("validation_loss", None) == "minimize"


def test_only_killed_trials_are_requeued_with_their_parameters(tmp_path):
    """A dead process's running trial and a Ctrl-C'd trial are queued again; a real failure and another
    machine's running trial are left alone, and a second start does not queue anything twice."""
    import socket
    import subprocess
    import sys

    import optuna

    from tuneforge.console import make_console
    from tuneforge.sweep.study import requeue_dead_trials

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.create_study(direction="maximize")
    host = socket.gethostname()
    for lr, owner, end in ((1e-4, {"host": host, "pid": gone.pid}, None),          # SIGKILLed here
                           (2e-4, {"host": host, "pid": 1}, "interrupted"),         # Ctrl-C
                           (3e-4, {"host": host, "pid": 1}, "error"),               # a real failure
                           (4e-4, {"host": "another-machine", "pid": gone.pid}, None)):  # someone else's
        trial = study.ask()
        study._storage.set_trial_param(trial._trial_id, "training.learning_rate", lr,
                                       optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True))
        trial.set_user_attr("owner", owner)
        if end == "interrupted":
            trial.set_user_attr("interrupted", True)
        if end:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    console = make_console(quiet=True)
    assert requeue_dead_trials(study, tmp_path, console) == [0, 1]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.params["training.learning_rate"] for t in waiting] == [1e-4, 2e-4]
    assert [t.state.name for t in study.trials[:4]] == ["FAIL", "FAIL", "FAIL", "RUNNING"]
    assert requeue_dead_trials(study, tmp_path, console) == []


def test_a_study_name_is_tied_to_its_metric_and_search_space(config, tmp_path):
    """Reusing a study name with another metric or other params would mix trials of different searches."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("metric", "exact_match")
    study.set_user_attr("params", ["training.epochs=1,2"])
    base = ["sweep", str(config), "--name", "s", "--storage", storage]
    result = CliRunner().invoke(app, [*base, "--param", "training.epochs=1,2", "--metric", "token_f1"])
    assert result.exit_code == 2 and "optimises 'exact_match', not 'token_f1'" in result.output
    result = CliRunner().invoke(app, [*base, "--param", "training.epochs=1,3", "--metric", "exact_match"])
    assert result.exit_code == 2 and "explores training.epochs=1,2, not training.epochs=1,3" in result.output
    result = CliRunner().invoke(app, ["sweep", str(config), "--name", "a b", "--param", "training.epochs=1,2",
                                      "--metric", "exact_match"])
    assert result.exit_code == 2 and "--name 'a b'" in result.output
