"""`ge export`: a variant's files into a directory, or its patch against the seed into a file,
and the one atomic text writer that `ge export --patch` and `ge report` share.

A failed export leaves nothing behind that was not there before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.fsutil import atomic_write, is_within
from guided_evolution.inspection.run_data import (
    clip,
    commit_of,
    diff_stats,
    open_run_index,
    resolve_id,
)
from guided_evolution.runstore.git_store import GitStore


def write_atomic(path: Path, text: str, hint: str = "choose a writable destination") -> None:
    """Write a text file via a temp sibling and a rename (readers never see half a file), with
    the permissions a plain write would give; an OSError becomes a GeError with ``hint``."""
    try:
        atomic_write(path, text, mode=0o666)
    except OSError as err:
        raise GeError(f"cannot write {path}: {err.strerror or err}", hint) from None


def export(run_dir: Path, variant: str, dest: Path, patch: bool = False, force: bool = False) -> dict[str, Any]:
    """Write a variant's files into ``dest``, or with ``patch`` a `git apply`-able patch against
    the seed (``dest`` is then a file, a directory to put ``<id>.patch`` in, or ``-`` for the
    returned data only). A non-empty destination is refused unless ``force``; an error leaves
    nothing behind that was not there before."""
    if not str(dest).strip():
        raise GeError("DEST is empty", "give a directory to export into (with --patch: a file, or - for stdout)")
    dest = Path(dest)
    if str(dest) == "-" and not patch:
        raise GeError("DEST '-' (standard output) needs --patch", "give a directory to export the files into")
    with open_run_index(run_dir) as (index, _resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        commit = commit_of(index, vid)
        seed_commit = commit_of(index, resolve_id(index, "seed", run_dir)) if patch else ""
        with GitStore.open(paths.repo) as store:
            try:
                if patch:
                    return _export_patch(store, vid, seed_commit, commit, dest, force)
                if is_within(dest, paths.root, resolve=True):
                    raise GeError(f"{dest} is inside the run directory {paths.root}", "export outside the run directory")
                return {"id": vid, "kind": "files", "path": str(dest), **_export_files(store, commit, dest, force)}
            except OSError as err:  # probing DEST itself failed: name too long, permission denied, ...
                raise GeError(
                    f"cannot export into {clip(str(dest), 120)}: {err.strerror or err}", "choose another destination"
                ) from None


def _export_patch(store: GitStore, vid: str, base: str, commit: str, dest: Path, force: bool) -> dict[str, Any]:
    text = str(store.patch(base, commit))
    files, added, removed = diff_stats(text)
    result = {"id": vid, "kind": "patch", "files": files, "added": added, "removed": removed}
    if str(dest) == "-":
        return {**result, "path": None, "patch": text}
    target = dest / f"{vid}.patch" if dest.is_dir() else dest
    if target.is_dir():
        raise GeError(f"{target} is a directory", "give a file name for the patch")
    if target.exists() and target.stat().st_size > 0 and not force:
        raise GeError(f"{target} already exists", "pass --force to overwrite it, or choose another file")
    if not target.parent.is_dir():
        raise GeError(f"directory {target.parent} does not exist", "create it first")
    write_atomic(target, text)
    return {**result, "path": str(target), "bytes": len(text.encode())}


def _export_files(store: GitStore, commit: str, dest: Path, force: bool) -> dict[str, Any]:
    if dest.exists() and not dest.is_dir():
        raise GeError(f"{dest} exists and is not a directory", "choose a directory to export into")
    files = sorted(store.read_files(commit))
    if not dest.exists():
        _export_new(store, commit, dest)
        return {"files": files, "overwritten": []}
    if any(dest.iterdir()) and not force:
        raise GeError(
            f"{dest} is not empty",
            "pass --force to write the variant's files over it (other files are kept), or choose an empty directory",
        )
    tmp = dest / f".ge-export-{os.getpid()}"
    overwritten = [f for f in files if (dest / f).exists()]
    for name in files:
        if (dest / name).is_dir():
            raise GeError(f"{dest / name} is a directory, the variant has a file there", "remove it or export elsewhere")
    try:
        store.export(commit, tmp)
        for name in files:
            target = dest.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp.joinpath(*name.split("/")), target)
    except OSError as err:
        raise GeError(f"cannot export into {dest}: {err.strerror or err}", "check that it is writable") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "overwritten": overwritten}


def _export_new(store: GitStore, commit: str, dest: Path) -> None:
    """Export into a temp sibling of ``dest`` and rename it into place; on failure remove the temp
    dir and every parent directory this created, so that a failed export leaves nothing."""
    dest = dest.absolute()
    top = dest
    while not top.parent.exists():
        top = top.parent
    tmp = dest.parent / f".ge-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.export(commit, tmp)
        os.rename(tmp, dest)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        for created in (dest.parent, *dest.parent.parents):
            if not created.is_relative_to(top):
                break
            with contextlib.suppress(OSError):
                created.rmdir()
        if isinstance(err, OSError):
            raise GeError(f"cannot export into {dest}: {err.strerror or err}", "choose a writable directory") from None
        raise
