"""Qt-free pictures of a model: colours on meshes, camera views, figures, legends, plots.

Used alike by the ``factortopy`` command line and the napari plugin.

- :mod:`.brain` — a model's maps on both hemispheres (:class:`~.brain.BrainScene`),
  mesh sets, side-by-side layout, ROI outlines, vertex picking.
- :mod:`.render` — off-screen rendering of painted meshes into figures.
- :mod:`.figure` — multi-view, multi-map figures with legends.
- :mod:`.plots` — small raster plots (layer-weight bars, legends, stimulus markers).
"""
