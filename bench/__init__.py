"""Benchmarks (not tests): each compares variants side by side against an anchor, in one process.

    .venv/bin/python -m bench                  # every benchmark, one table of ratios
    .venv/bin/python -m bench --only epoch     # one of them, through the same runner
    .venv/bin/python -m bench.bus              # one of them, with its own tables
    .venv/bin/python -m bench --device cuda    # one GPU (ResNet-18 and -50, bf16-mixed), < 5 min
    .venv/bin/python -m bench --smoke          # tiny sizes: checks that everything runs

========================  ===================================================================
``bench.bus``             one `BatchEnd` to 8 subscribers: `Bus` vs Lightning's hook dispatch
``bench.ema``             EMA update and validation swap vs Lightning's `EMAWeightAveraging`
``bench.confusion_matrix`` validation with the confusion matrix vs without, vs a second forward
``bench.onnx``            onnxruntime vs eager PyTorch inference
``bench.epoch``           a training epoch with every subscriber on vs bare Lightning (headline)
``bench.scan``            the data scan, first and second start, vs torchvision's ImageFolder listing
``bench.loader``          the training loader's images/s vs ImageFolder + DataLoader, same transforms
========================  ===================================================================

How a benchmark plugs into ``python -m bench``: a module ``bench/<name>.py``, listed in
`bench.__main__.BENCHMARKS`, with

- ``main(argv=None)``, which prints its tables (``python -m bench.<name>``);
- ``rows(...) -> list[bench._timing.Row]``, which measures and prints nothing. The runner
  passes ``device="cpu" | "cuda"`` when `rows` takes a `device` (otherwise the benchmark
  is CPU-only and skipped under ``--device cuda``), a `progress` callback (one line per
  step, shown on stderr) and a `details` callback (extra tables, shown with
  ``--details``) when it takes them. The runner sets the number of torch threads first
  (one on the CPU unless ``--threads`` says otherwise).

A module without `rows` still runs: the runner reads the markdown tables its `main`
prints, taking each table's first row as the anchor and the column headed ``ms`` (or
``us``, ``s``) as the time.

Shared helpers (warm-up, interleaved repeats, medians, the table) are in `bench._timing`.
"""
