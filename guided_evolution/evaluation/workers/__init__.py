"""Persistent evaluation workers: a pool of per-slot processes (``pool``) and the preloading worker
(``preload`` starts it, ``zygote`` is its stdlib-only body: every stage a box of its own).

Nothing is imported here, so that ``ge --help`` stays fast.
"""
