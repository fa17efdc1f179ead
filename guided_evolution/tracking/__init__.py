"""Experiment tracking: a run followed from outside the engine and logged to MLflow.

``spawn`` (imported by the engine, standard library only) starts ``follower`` in a process of
its own, which reads the run's index read-only (as ``inspection`` does) and logs what it finds.
"""
