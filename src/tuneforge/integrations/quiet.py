"""Silence third-party progress bars and advisory warnings so tuneforge's own rich progress is what users see.

transformers/datasets print tqdm bars (weight shards, dataset maps) and the Trainer's PrinterCallback prints
raw log dicts to stdout; we show the same information once, in our own progress bar and metrics.jsonl.
"""
from __future__ import annotations

import warnings


def quiet_third_party_output() -> None:
    import logging

    # peft/transformers import bitsandbytes when it is installed; on CPU it logs that the optional `kernels`
    # package (a faster 4-bit gemm) is missing. Its built-in kernels are correct, so this is noise for users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # Deprecation notices about upstream renames (e.g. gradient_checkpointing -> activation_checkpointing)
    # come from the libraries' own internals, not from options a user set.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|peft)\..*")


def drop_stdout_printer(trainer) -> None:
    """With tqdm disabled the Trainer falls back to PrinterCallback, which prints every log dict to stdout."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
