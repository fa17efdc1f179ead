"""ge: LLM Guided Evolution of source code, with every variant stored as a git commit."""

__version__ = "0.1.0"
