"""User-facing errors: one line that names the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations


class GeError(Exception):
    """A mistake the user can fix (bad config, missing file, ...). The CLI prints it on one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its hint on a single line."""
        text = self.message.replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(GeError):
    """ge.toml or a CLI flag is invalid."""


class RunStateError(GeError):
    """The run directory is missing, locked by another process, or inconsistent."""


class RunDamagedError(RunStateError):
    """Part of a run's record (index.sqlite, repo.git, config.json) is damaged or gone.

    ``what`` says what is damaged; ``flag`` is the `ge doctor` flag that repairs it
    (``--repair``, ``--rebuild-index``), or None when doctor can only say what is left.
    """

    def __init__(
        self, run_dir: object, what: str, flag: str | None, hint: str | None = None
    ) -> None:
        self.run_dir = str(run_dir)
        self.what = what
        self.flag = flag
        doctor = f"ge doctor {self.run_dir}" + (f" {flag}" if flag else "")
        if hint is None:
            hint = f"run `{doctor}`" if flag else f"`{doctor}` says what is left"
        super().__init__(f"{self.run_dir} is damaged: {what}", hint)
