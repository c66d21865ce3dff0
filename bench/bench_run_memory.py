"""Where a training command's memory peaks: ``factortopy train`` run in this process with
its resident set size sampled on a thread, and each sample given the run's phase (the
kind of the last progress record: loading, training, validation, soup, calibration,
test scores and the model's summary, writing the file).

::

    python bench/bench_run_memory.py -- train --cache C --dataset D --out M.ftopy \\
        --max-seconds 600 --memory-limit 0.5

Prints one row per phase (first and last second, RSS at its start, its peak, and the
peak's excess over the start) and writes them, with the whole timeline, to
``--json`` (default ``run_memory.json`` beside the model). RSS is the process's
(``psutil``), sampled every ``--every`` seconds (default 0.05).
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from pathlib import Path

import psutil

#: The phase a progress record's kind starts (kinds not named keep the current phase).
PHASES = {
    "start": "training",
    "step": "training",
    "recipe": "training",
    "validating": "validation",
    "validation": "training",
    "souping": "soup",
    "soup": "soup",
    "calibrating": "calibration",
    "calibrated": "test scores and summary",
    "done": "test scores and summary",
}


class Sampler:
    """RSS samples ``(seconds, GiB, phase)`` taken every ``every`` seconds on a thread."""

    def __init__(self, every: float) -> None:
        self.every, self.phase, self.samples = every, "inputs, set-up, first steps", []
        self._proc, self._stop = psutil.Process(), threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss / 2**30
            self.samples.append((time.perf_counter() - self._t0, rss, self.phase))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def phase_rows(samples: list[tuple[float, float, str]]) -> list[dict]:
    """One row per stretch of consecutive samples in the same phase."""
    rows: list[dict] = []
    for t, rss, phase in samples:
        if not rows or rows[-1]["phase"] != phase:
            rows.append(
                {"phase": phase, "from_s": t, "to_s": t, "start_gib": rss, "peak_gib": rss}
            )
        row = rows[-1]
        row["to_s"], row["peak_gib"] = t, max(row["peak_gib"], rss)
    return rows


def merged(rows: list[dict]) -> list[dict]:
    """Training and validation alternate: merge every phase into one row (first start,
    last end, the lowest start RSS and the highest peak)."""
    out: dict[str, dict] = {}
    for r in rows:
        m = out.setdefault(r["phase"], dict(r))
        m["to_s"] = r["to_s"]
        m["start_gib"] = min(m["start_gib"], r["start_gib"])
        m["peak_gib"] = max(m["peak_gib"], r["peak_gib"])
    return list(out.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=float, default=0.05)
    p.add_argument("--json", type=Path)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- then factortopy's arguments")
    args = p.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    from napari_factortopy.app import _progress, cli
    from napari_factortopy.core.runtime import limit_malloc_arenas

    if "--memory-limit" in argv:  # as `factortopy train` does, before the sampler's thread
        limit_malloc_arenas(2)

    drain = _progress.drain_training

    with Sampler(args.every) as sampler:

        def tracked(gen, tcfg):
            def marked():
                for rec in gen:
                    sampler.phase = PHASES.get(rec["kind"], sampler.phase)
                    yield rec

            fitted = drain(marked(), tcfg)
            sampler.phase = "writing the file"
            return fitted

        _progress.drain_training = tracked
        rc = cli.main(argv)
    rows = merged(phase_rows(sampler.samples))
    print(f"exit {rc}; peak {max(s[1] for s in sampler.samples):.2f} GiB")
    print("| phase | from s | to s | RSS at start GiB | peak GiB | peak − start |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['phase']} | {r['from_s']:.0f} | {r['to_s']:.0f} | {r['start_gib']:.2f} | "
            f"{r['peak_gib']:.2f} | {r['peak_gib'] - r['start_gib']:+.2f} |"
        )
    out = args.json
    if out is None:
        pairs = itertools.pairwise(argv)
        model = next((b for a, b in pairs if a == "--out"), "run.ftopy")
        out = Path(model).with_name("run_memory.json")
    out.write_text(json.dumps({"argv": argv, "phases": rows, "samples": sampler.samples}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
