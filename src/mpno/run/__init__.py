"""The application: configuration, training, evaluation, checkpoints, distributed runs,
reports, benchmarks and the ``mpno`` command."""
