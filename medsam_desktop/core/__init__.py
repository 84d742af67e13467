"""The engine, in four parts that know nothing of Qt: ``backends`` (inference runtimes and the loader that picks
the default), ``inference`` (preprocessing, predictor, cache, propagation), ``document`` (labels, undo, autosave)
and ``evaluation`` (metrics)."""
