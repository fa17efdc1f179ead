"""`ge init`: write the commented ge.toml, the task (TASK.md) and a minimal marked seed from
`templates/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from guided_evolution.errors import GeError

TEMPLATE_FILES = ("ge.toml", "TASK.md", "model.py", "evaluate.py")


def write_template(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the template files into `directory`; refuse to overwrite unless `force`."""
    targets = [directory / name for name in TEMPLATE_FILES]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise GeError(f"{', '.join(existing)} already exist", "pick another directory or pass --force")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        templates = resources.files("guided_evolution") / "templates"
        for name, target in zip(TEMPLATE_FILES, targets, strict=True):
            target.write_text((templates / name).read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as err:
        raise GeError(f"cannot write the seed into {directory}: {err.strerror}", "check the path and permissions") from None
    return targets
