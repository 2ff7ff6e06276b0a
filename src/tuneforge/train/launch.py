"""How a run is laid out on processes and devices: torchrun launch, ranks, strategy, optimizer, memory savers.

    tuneforge train CONFIG --nproc 2                       # data parallel on one machine (gloo on CPU, nccl on GPU)
    tuneforge train CONFIG --nproc 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500

`--nproc` re-executes `tuneforge train` under torchrun (`python -m torch.distributed.run`): every process runs the
same runner; rank 0 alone writes the run directory (config, manifest, metrics, checkpoint markers, eval, exports,
report), the others only train. We never go through `accelerate launch --cpu`, which silently starts ONE process.

The mapping from `training.*` scale-out options to HF TrainingArguments lives here (`scale_out_arguments`) so
every objective's trainer gets the same optimizer, gradient checkpointing and DDP/FSDP/DeepSpeed settings.

`supervised_run` is how a run ends: SIGTERM (schedulers, `docker stop`) is turned into the same interruption as
Ctrl-C, either one leaves the manifest `interrupted` (resumable with `--resume`), any other error `failed`; while
it runs, rank 0 keeps heartbeat.json fresh so a run killed outright (SIGKILL) reads as interrupted too.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError, RunError
from tuneforge.runs.rundir import RunDir

# Our optimizer names -> HF TrainingArguments.optim, and the package each needs.
OPTIMIZERS = {
    "adamw_torch": ("adamw_torch", None),
    "adamw_8bit": ("adamw_bnb_8bit", "bitsandbytes"),
    "paged_adamw_8bit": ("paged_adamw_8bit", "bitsandbytes"),
}


def rank() -> int:
    """Global rank from torchrun's environment (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def _package_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def preflight(training) -> None:
    """Fail before any model is loaded when an option cannot work on this machine."""
    optim, package = OPTIMIZERS[training.optimizer]
    if package and not _package_available(package):
        raise ConfigError(
            f"training.optimizer={training.optimizer} needs {package}, which is not installed",
            hint=f"pip install {package} (8-bit optimizers need a CUDA GPU for real savings), "
            "or set training.optimizer=adamw_torch",
        )
    if training.distributed == "deepspeed" and not _package_available("deepspeed"):
        raise ConfigError(
            "training.distributed=deepspeed needs the deepspeed package, which is not installed",
            hint="pip install deepspeed on the GPU machines (it needs CUDA to build), or use distributed=ddp|fsdp",
        )
    from tuneforge.config.loader import distributed_config_problem

    problem = distributed_config_problem(training)
    if problem:
        raise ConfigError(f"training.distributed_config: {problem}",
                          hint="see examples/distributed/ for FSDP and DeepSpeed ZeRO-2/3 configs")


def scale_out_arguments(training, *, world_size: int = 1) -> dict:
    """TrainingArguments keywords for the optimizer, memory savers and the distributed strategy."""
    args = {
        "optim": OPTIMIZERS[training.optimizer][0],
        "gradient_checkpointing": training.gradient_checkpointing,
        # Non-reentrant checkpointing needs no `requires_grad` on the inputs, so frozen-base LoRA works as is.
        "gradient_checkpointing_kwargs": {
            "use_reentrant": False, "every_n_layers": training.gradient_checkpointing_every_n_layers,
        } if training.gradient_checkpointing else None,
        # Every trainable parameter takes part in every step; searching for unused ones costs a graph walk per step.
        "ddp_find_unused_parameters": False if world_size > 1 else None,
    }
    if training.distributed == "fsdp":
        args["fsdp"] = True
        args["fsdp_config"] = training.distributed_config  # None: transformers' defaults (FSDP2, full shard)
    elif training.distributed == "deepspeed":
        args["deepspeed"] = training.distributed_config
    return args


@dataclass
class LaunchPlan:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1


def torchrun_command(config: str, overrides: list[str], plan: LaunchPlan, *, run_name: str,
                     resume: bool = False) -> list[str]:
    """The command line that runs `tuneforge train` once per process under torchrun.

    `run_name` is fixed here, once, because the default name carries a timestamp that each process (and node)
    would otherwise compute differently.
    """
    if plan.nproc < 1 or plan.nnodes < 1 or not 0 <= plan.node_rank < plan.nnodes:
        raise ConfigError(f"--nproc {plan.nproc} --nnodes {plan.nnodes} --node-rank {plan.node_rank}: "
                          "need nproc >= 1, nnodes >= 1 and 0 <= node-rank < nnodes")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(plan.nproc)]
    if plan.nnodes == 1 and plan.master_addr is None:
        command.append("--standalone")  # a free local port, so parallel runs on one machine never collide
    else:
        if plan.master_addr is None:
            raise ConfigError("multi-node training needs --master-addr (the address of the node with --node-rank 0)")
        command += ["--nnodes", str(plan.nnodes), "--node_rank", str(plan.node_rank),
                    "--master_addr", plan.master_addr, "--master_port", str(plan.master_port)]
    command += ["-m", "tuneforge.cli.main", "train", str(config), *overrides, f"output.name={run_name}"]
    if resume:
        command.append("--resume")
    return command


def resolve_run_name(cfg, config_path: str, *, resume: bool, plan: LaunchPlan) -> str:
    from tuneforge.runs.rundir import default_run_name
    from tuneforge.train.checkpoints import find_run_to_resume

    if resume:
        return find_run_to_resume(cfg.output.dir, cfg.output.name, Path(config_path).stem).name
    if plan.nnodes > 1 and not cfg.output.name:
        raise ConfigError("multi-node training needs output.name: every node must write to the same run directory",
                          hint="add output.name=<name> (and put output.dir on a filesystem all nodes share)")
    return cfg.output.name or default_run_name(config_path)


def launch_distributed(cfg, config_path: str, overrides: list[str], plan: LaunchPlan, *, resume: bool) -> int:
    """Run the training under torchrun and return its exit code."""
    if "LOCAL_RANK" in os.environ:
        raise ConfigError("--nproc given inside a process that torchrun already started",
                          hint="run `tuneforge train CONFIG --nproc N` directly, not under torchrun")
    preflight(cfg.training)
    name = resolve_run_name(cfg, config_path, resume=resume, plan=plan)
    command = torchrun_command(config_path, overrides, plan, run_name=name, resume=resume)
    env = dict(os.environ)
    if cfg.training.num_threads:
        env.setdefault("OMP_NUM_THREADS", str(cfg.training.num_threads))
    return run_forwarding_sigterm(command, env)


def run_forwarding_sigterm(command: list[str], env: dict | None) -> int:
    """Run `command` and pass a SIGTERM sent to this process on to it; returns its exit code.

    `docker stop` and some schedulers signal only the top process. Without forwarding, the launcher would die and
    leave torchrun and its workers training on, orphaned. torchrun relays the signal to every worker, where
    `supervised_run` records the interruption. Ctrl-C already reaches the whole foreground process group.
    """
    child = subprocess.Popen(command, env=env)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward) if _in_main_thread() else None
    try:
        return child.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run unwinds exactly as after Ctrl-C (a KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises TrainingInterrupted once (a repeat while unwinding is ignored)."""
    if not _in_main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise TrainingInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_name(error: BaseException) -> str | None:
    """"SIGTERM" / "SIGINT" when `error` is an interruption rather than a failure."""
    if isinstance(error, TrainingInterrupted):
        return signal.Signals(error.signum).name
    if isinstance(error, KeyboardInterrupt):
        return "SIGINT"
    return None


@contextlib.contextmanager
def supervised_run(run: RunDir, timings: dict):
    """Run the block as the training of `run`: heartbeat while it runs, and its end recorded in the manifest.

    An interruption (Ctrl-C or SIGTERM) leaves status `interrupted`, any other exception `failed` unless it says
    what the stop means with a `run_status` attribute (a sweep's pruned trial is `pruned`); all re-raise.
    """
    from tuneforge.runs.rundir import Heartbeat, now_iso

    beating = Heartbeat(run) if is_main_process() and not isinstance(run, FollowerRunDir) else None
    with sigterm_raises(), (beating or contextlib.nullcontext()):
        try:
            yield
        except BaseException as error:
            name = interruption_name(error)
            if name is not None:
                run.update_manifest(status="interrupted", error=f"interrupted by {name}", finished_at=now_iso(),
                                    timings=timings)
            else:
                run.update_manifest(status=getattr(error, "run_status", "failed"),
                                    error=f"{type(error).__name__}: {error}", finished_at=now_iso(), timings=timings)
            raise


def refuse_live_run(run: RunDir, console=None) -> None:
    """`--resume` must not train into a run directory whose process is still training.

    Only a process on this host can be known to be alive. On another host a fresh heartbeat may belong to a job
    that was just killed and requeued elsewhere (up to the staleness limit), so that only earns a warning.
    """
    import socket

    from tuneforge.runs.rundir import effective_status

    manifest = run.read_manifest()
    if effective_status(run, manifest)[0] != "running" or "pid" not in manifest:
        return
    where = f"pid {manifest['pid']} on {manifest.get('host')}"
    if manifest.get("host") == socket.gethostname():
        raise RunError(f"--resume: run {run.name} is still running ({where})",
                       hint="stop it first (SIGTERM or Ctrl-C leaves it resumable), then resume")
    if console is not None:
        console.print(f"[yellow]note:[/] run {run.name} was last seen running ({where}, heartbeat fresh); "
                      "make sure that process has stopped", highlight=False)


class FollowerRunDir(RunDir):
    """The run directory as seen by ranks other than 0: same paths, but manifest updates are rank 0's job."""

    def update_manifest(self, **fields) -> dict:
        return {}


def prepare_run_dir(cfg, config_path: str | None, *, resume: bool, console):
    """The run directory to train into, and the checkpoint to resume from (None: from step 0).

    A new run: rank 0 creates the directory and writes config.yaml + the first manifest.
    `--resume`: the existing directory is reused; the newest trusted checkpoint is chosen, untrusted newer ones
    are set aside and metrics.jsonl loses the records logged after that checkpoint (they are logged again).
    """
    from rich.markup import escape

    from tuneforge.atomic import write_json_atomic, write_text_atomic
    from tuneforge.config.loader import dump_config
    from tuneforge.runs.rundir import (
        base_manifest,
        create_run_dir,
        default_run_name,
        now_iso,
        process_identity,
        untrained_leftover,
    )
    from tuneforge.train import checkpoints

    preflight(cfg.training)
    main = is_main_process()
    name = cfg.output.name or default_run_name(config_path)
    if not resume:
        if not main:
            return FollowerRunDir(Path(cfg.output.dir) / name), None
        path = Path(cfg.output.dir) / name
        leftover = untrained_leftover(path) if path.is_dir() and not cfg.output.overwrite else None
        if leftover:
            console.print(f"[yellow]note:[/] replacing {escape(str(path))}: {escape(leftover)}")
        run = create_run_dir(cfg.output.dir, name, overwrite=cfg.output.overwrite or leftover is not None)
        write_text_atomic(run.config, dump_config(cfg))
        write_json_atomic(run.manifest, base_manifest(run, seed=cfg.training.seed, config_path=config_path))
        console.print(f"[bold]run[/] {run.path}")
        return run, None

    stem = Path(config_path).stem if config_path else "run"
    path = checkpoints.find_run_to_resume(cfg.output.dir, cfg.output.name, stem)
    checkpoints.check_same_config(path.joinpath("config.yaml").read_text(), cfg.model_dump(mode="json"), path)
    point = checkpoints.find_resume_checkpoint(path / "checkpoints")
    if not main:
        return FollowerRunDir(path), point.checkpoint
    run = RunDir(path)
    refuse_live_run(run, console)
    for folder, reason in point.skipped:
        console.print(f"[yellow]note:[/] not resuming from {folder.name}: {reason}; "
                      f"set aside as untrusted-{folder.name}")
    checkpoints.set_aside_untrusted(point)
    dropped = checkpoints.truncate_metrics(run.metrics, point.step)
    if point.checkpoint is None:
        console.print(f"[yellow]note:[/] {path} has no complete checkpoint; training again from step 0")
    else:
        console.print(f"[bold]resume[/] {run.path} from {point.checkpoint.name} (step {point.step}"
                      + (f"; dropped {dropped} metrics records logged after it" if dropped else "") + ")")
    manifest = run.read_manifest()
    resumes = manifest.get("resumes", []) + [{"at": now_iso(), "from_step": point.step,
                                              "checkpoint": point.checkpoint.name if point.checkpoint else None}]
    run.update_manifest(status="running", resumes=resumes, error=None, finished_at=None, **process_identity())
    return run, point.checkpoint
