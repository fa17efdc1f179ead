"""ge's built-in prompt files (`*.txt`), installed as the package `guided_evolution.builtin_prompts`.

A regular package (not a namespace) so that an editable install maps it onto this directory.
"""
