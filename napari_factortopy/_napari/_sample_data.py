"""Sample data: the phantom subject with a FactorTopy model trained on the fly.

The first call builds a small phantom and trains a short model (about a minute on a
laptop CPU); both are kept in the user cache folder
(``platformdirs.user_cache_dir("napari-factortopy")``, or ``$FACTORTOPY_CACHE``), so
later calls open the saved ``.ftopy`` at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_factortopy.core.config import TrainConfig
from napari_factortopy.data.phantom import PhantomConfig

__all__ = ["SAMPLE_PHANTOM", "SAMPLE_TRAIN", "cache_dir", "phantom_model", "sample_model_path"]

#: Size of the sample phantom.
SAMPLE_PHANTOM = PhantomConfig(n_vertices=1000, n_images=256, image_size=96)
#: Training recipe of the sample model (short on purpose).
SAMPLE_TRAIN = TrainConfig(steps_per_epoch=50, max_epochs=4, batch_size=16, log_every=25)


def cache_dir() -> Path:
    """Where the sample phantom and model are kept."""
    env = os.environ.get("FACTORTOPY_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-factortopy"))


def sample_model_path(
    progress=None,
    phantom_config: PhantomConfig | None = None,
    train: TrainConfig | None = None,
) -> Path:
    """The sample model file, built and trained first when it is not cached.

    Parameters
    ----------
    progress : callable(dict), optional
        Receives the job's progress records.
    phantom_config : PhantomConfig, optional
    train : TrainConfig, optional
        Override :data:`SAMPLE_PHANTOM` / :data:`SAMPLE_TRAIN` (e.g. a quicker model).
    """
    from napari_factortopy.app.jobs import TrainJob, training_job

    root = cache_dir() / "sample"
    path = root / "phantom-model.ftopy"
    if path.is_file():
        return path
    job = TrainJob(
        out=path,
        phantom=root / "phantom",
        phantom_config=phantom_config or SAMPLE_PHANTOM,
        train=train or SAMPLE_TRAIN,
        bottleneck=32,
        hidden=64,
        device="auto",
    )
    for rec in training_job(job):
        if progress is not None:
            progress(rec)
    return path


def phantom_model() -> list[tuple]:
    """npe2 sample data: layer data of the phantom's model (trained on first use)."""
    from napari_factortopy._napari._layers import model_layers

    return model_layers(sample_model_path())
