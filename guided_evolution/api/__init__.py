"""ge as a library: start, resume, follow, stop and read runs from Python (docs/api.md).

    import guided_evolution as ge

    run = ge.run("my_seed", models="offline", generations=2, background=True)
    for event in run.follow():
        print(event.kind, event.variant)
    best = run.front()[0]
    run.export(best.id, "best/")

The `ge` command line is a thin layer over this package: a foreground ``run``/``resume`` is the
very `ge run`/`ge resume` path, a background one runs that path in a child process
(``api.background``), and every view is the typed view `--json` prints.
"""

from guided_evolution.api.handle import Event, Exported, Run, Variant, VariantInfo
from guided_evolution.api.launch import (
    DoctorResult,
    doctor,
    init,
    latest_run_dir,
    looks_like_run,
    open_run,
    resume,
    run,
)

__all__ = [
    "DoctorResult",
    "Event",
    "Exported",
    "Run",
    "Variant",
    "VariantInfo",
    "doctor",
    "init",
    "latest_run_dir",
    "looks_like_run",
    "open_run",
    "resume",
    "run",
]
