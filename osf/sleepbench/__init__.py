"""SleepBench-mini: the OSF paper's comparison (objectives x channel presets x tasks, k-shot, scaling) on a laptop."""

from osf.sleepbench.config import SleepBenchConfig

__all__ = ["SleepBenchConfig", "SleepBenchOutcome", "run_sleepbench"]


def __getattr__(name: str):
    # the runner pulls in torch and every model; `--help` and the config do not need it
    if name in ("SleepBenchOutcome", "run_sleepbench"):
        from osf.sleepbench import run

        return getattr(run, name)
    raise AttributeError(f"module 'osf.sleepbench' has no attribute {name!r}")
