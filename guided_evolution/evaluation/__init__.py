"""Evaluating variants: the contract and the local executor here, three rooms beneath.

* ``contract``: ``EvalRequest``, ``EvalResult``, ``read_metrics`` and the ``Executor`` protocol.
* ``factory``: builds the configured executor (``build_executor``) and plans slots (``gpu``).
* ``local``: ``LocalExecutor``, slots on this machine, the check → evaluate cascade.
* ``gpu``: GPU discovery and packing slots onto a GPU.
* ``sandbox/``: wrapping one command so that untrusted code stays in its box (``wrap``: the
  ``Sandbox``; ``bwrap`` and ``confine_backend``: the two backends' layouts; ``confine``: ge's own
  launcher, a stdlib-only script; ``landlock``, ``syscall_filter``, ``cgroups``, ``uids``,
  ``env``, ``execute``, ``disk_reserve``: the layers; ``isolation``: what the box holds, in words).
* ``workers/``: persistent per-slot evaluation workers (``pool``, ``channel``, ``files``) and the
  preloading worker (``preload``, ``zygote``: one box per stage).
* ``slurm/``: ``SlurmExecutor`` (``executor``), one sbatch job per evaluation: ``commands``
  (sbatch, squeue, sacct), ``script`` (the job script), ``outcomes`` (results and failure
  reasons), ``job`` (what runs on the node).

Nothing is imported here, so that ``ge --help`` stays fast.
"""
