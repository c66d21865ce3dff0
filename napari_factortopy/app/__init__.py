"""Application level: what a user runs, built from ``core``, ``data`` and ``scene``.

- :mod:`.inputs` — one function that builds a training run's inputs (features,
  responses, subject, split) for the CLI, the Train panel and Python.
- :mod:`.jobs` — long jobs as generators of progress records (training to a file).
- :mod:`.predict` — one image through a model's backbone and mapping.
- :mod:`.demo` — the phantom demo pipeline.
- :mod:`.cli`, :mod:`.cli_data`, :mod:`.cli_figure` — the ``factortopy`` command.
"""
