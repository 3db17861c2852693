"""Experiment runner: CLI, configs, SB3 scripts, Mesa population, reports. Nothing imports this package."""
