"""The sandbox: one evaluation command in a box it cannot leave (see SECURITY.md and ``wrap``).

Nothing is imported here: ``confine``, ``landlock`` and ``syscall_filter`` also run as stdlib-only
scripts beside the package, and ``ge --help`` stays fast.
"""
