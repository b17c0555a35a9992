"""Finding good settings: the learning-rate range test and sweeps on Optuna.

lr_range     `find_lr`: the range test on the run's own data, model and optimiser (DDP too)
lr_files     its folder: the curve with the suggestion marked, a CSV, a JSON record
space        a search space in TOML, validated against the settings before any trial
pruning      `TrialReporter`: the subscriber that reports a trial's metric to Optuna's pruner
sweep        `run_sweep`: the study, its trials as run directories, resume, several jobs
leaderboard  leaderboard.csv, leaderboard.html and best.toml

Modules are imported by name; ``optuna`` (the extra of the same name) only by the sweep's.
"""

__all__ = ["leaderboard", "lr_files", "lr_range", "pruning", "space", "sweep"]
