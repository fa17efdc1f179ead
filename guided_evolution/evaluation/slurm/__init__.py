"""The SLURM executor: one sbatch job per evaluation (``executor``), its commands, script,
outcomes, and the part that runs on the node (``job``).

Nothing is imported here, so that ``ge --help`` stays fast.
"""
