"""Evaluation that decides (issue 26): probes as estimators, seeds as the unit, baselines and settings."""
