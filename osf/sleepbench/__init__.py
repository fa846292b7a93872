"""SleepBench-mini: the OSF paper's comparison (objectives x channel presets x tasks, k-shot, scaling) on a laptop."""

from osf.sleepbench.config import SleepBenchConfig
from osf.sleepbench.run import SleepBenchOutcome, run_sleepbench

__all__ = ["SleepBenchConfig", "SleepBenchOutcome", "run_sleepbench"]
