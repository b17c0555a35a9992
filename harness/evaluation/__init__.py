"""Scoring a model on a labelled folder, torch-free: data, metrics, pictures, the folder.

    data      `EvaluationData`: a labelled ImageFolder split, classes matched to the model's
    metrics   top-k, balanced accuracy, precision/recall/F1, ECE, most-confused pairs (numpy)
    pairs     `Pairs`: the confusion matrix as its non-zero cells, and the per-class tables
              and picture made from it (the run's confusion_matrix subscriber uses them too)
    pictures  the top-losses grid, its Grad-CAM maps and the reliability diagram
              (`harness.pictures` draws them and the confusion matrix, as it does the run's)
    folder    `write_evaluation`: metrics.json, tables, pictures, predictions.csv

The checkpoint side (Lightning's ``trainer.test``) is `harness.training.evaluation`, its
Grad-CAM maps `harness.training.cam`; the command line is `harness.evaluate`. Its modules
are imported by name.
"""

__all__ = ["data", "folder", "metrics", "pairs", "pictures"]
