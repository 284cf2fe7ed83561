"""Training a split model: assemble a run, run its epochs, measure it, log it, restore it.

- :mod:`nopeek.training.trainer`: :func:`~nopeek.training.trainer.train` and
  :func:`~nopeek.training.trainer.build_run` (validate, build the topology, start the run);
- :mod:`nopeek.training.runner`: the run loop (epochs over an epoch plan, checkpoints, exact
  resume);
- :mod:`nopeek.training.measures`: accuracy, AUC, dCor at the cut, bytes sent;
- :mod:`nopeek.training.epoch_log`: ``metrics.csv``, TensorBoard and the progress line.

Import the modules themselves (``from nopeek.training.trainer import train``, or
``nopeek.train``); this package imports nothing on its own.
"""
