"""The channel clusters' k-means seeding: sklearn's greedy k-means++ (its default,
2 + ln k candidates per centre) against plain k-means++ (one candidate), on a planted
readout (issue 22: the first clusters map takes ≈ 10 s at fsaverage7's 37,984 vertices).

A readout ``beta`` (V, D) of 20 planted groups plus Gaussian noise goes through
:func:`~napari_factortopy.core.analyses.kernel_features`, k-means (k = 1000) from each
seeding, and Ward into 20 clusters, as ``channel_clusters`` does. Printed per seeding:
the seeding's and the whole clustering's seconds, k-means' inertia and the adjusted Rand
index against the planted groups; then the agreement of two greedy seeds and of greedy
against plain::

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_cluster_seeding.py --noise 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vertices", type=int, default=37984)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--noise", type=float, default=4.0, help="noise SD (group centres ~ N(0, 1))")
    args = p.parse_args()
    from sklearn.cluster import AgglomerativeClustering, KMeans, kmeans_plusplus
    from sklearn.metrics import adjusted_rand_score as ari

    from napari_factortopy.core.analyses import kernel_features

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 20, args.vertices)
    proto = rng.normal(size=(20, args.channels))
    noise = args.noise * rng.normal(size=(args.vertices, args.channels))
    feats = kernel_features((proto[truth] + noise).astype(np.float32))
    norms = (feats**2).sum(1)
    labels = {}
    for trials, seed in ((None, 0), (None, 1), (1, 0)):
        t = time.perf_counter()
        centres, _ = kmeans_plusplus(
            feats, 1000, random_state=seed, n_local_trials=trials, x_squared_norms=norms
        )
        seeded = time.perf_counter() - t
        km = KMeans(1000, init=centres, n_init=1, random_state=seed).fit(feats)
        ward = AgglomerativeClustering(20, linkage="ward").fit_predict(km.cluster_centers_)
        labels[(trials, seed)] = ward[km.labels_]
        name = "greedy" if trials is None else "plain"
        print(
            f"{name} seed {seed}: seeding {seeded:.1f} s, all {time.perf_counter() - t:.1f} s, "
            f"inertia {km.inertia_:.5g}, adjusted Rand vs planted "
            f"{ari(truth, labels[(trials, seed)]):.3f}"
        )
    print(f"greedy seed 0 vs greedy seed 1: {ari(labels[(None, 0)], labels[(None, 1)]):.4f}")
    print(f"greedy seed 0 vs plain seed 0: {ari(labels[(None, 0)], labels[(1, 0)]):.4f}")


if __name__ == "__main__":
    main()
