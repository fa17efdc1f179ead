"""Evaluating variants: the contract, the executors and the sandbox they run commands in.

* ``contract``: ``EvalRequest``, ``EvalResult``, ``read_metrics`` and the ``Executor`` protocol.
* ``factory``: builds the configured executor (``build_executor``) and plans slots (``gpu``).
* ``local``: ``LocalExecutor``, slots on this machine, the check → evaluate cascade.
* ``workers`` (+ ``worker_channel``): optional persistent per-slot evaluation workers.
* ``slurm``: ``SlurmExecutor``, one sbatch job per evaluation; ``slurm_commands`` (sbatch,
  squeue, sacct), ``slurm_script`` (the job script), ``slurm_outcomes`` (results and failure
  reasons), ``slurm_job`` (what runs on the node).
* ``sandbox``: wrapping one command (bwrap / unshare / none, rlimits); ``sandbox_env`` (the
  scrubbed environment), ``sandbox_bwrap`` (the bwrap mounts), ``sandbox_uids`` (dedicated
  uids and leftover killing).
* ``gpu``: GPU discovery and packing slots onto a GPU.

Nothing is imported here, so that ``ge --help`` stays fast.
"""
