"""``python -m guided_evolution.serve [RUN|RUNS_DIR]``: `ge serve` before the CLI names it."""

from guided_evolution.serve.command import main

if __name__ == "__main__":
    main()
