"""Allow ``python -m guided_evolution``."""

from guided_evolution.cli import main

if __name__ == "__main__":
    main()
