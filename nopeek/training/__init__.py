"""Training a split model: assemble a run, run its epochs, measure it, log it, restore it.

- :mod:`nopeek.training.assemble`: the one way to assemble a run and to restore it
  (:func:`~nopeek.training.assemble.build_run`, :func:`~nopeek.training.assemble.assemble`,
  :func:`~nopeek.training.assemble.restore`): train, resume, infer and attack targets use it;
- :mod:`nopeek.training.trainer`: :func:`~nopeek.training.trainer.train` (validate, assemble,
  run);
- :mod:`nopeek.training.runner`: the run loop (epochs over an epoch plan, checkpoints, exact
  resume) and the run's ``state_dict()`` / ``load_state_dict()``;
- :mod:`nopeek.training.measures`: accuracy, AUC, dCor at the cut, bytes sent;
- :mod:`nopeek.training.epoch_log`: ``metrics.csv``, TensorBoard and the progress line.

Import the modules themselves (``from nopeek.training.trainer import train``, or
``nopeek.train``); this package imports nothing on its own.
"""
