"""Damage to a run's record, watched between the engine's reads and writes (``runstore.damage``).

Once damage is found, the reader and the recorder share it: nothing more is written, and every
failure of a read or a write names the damage (not what libgit2 or SQLite made of it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from guided_evolution.errors import RunDamagedError
from guided_evolution.runstore import damage


class RecordGuard:
    """The run's ``RunWatch`` (None: unwatched) and the damage it found."""

    def __init__(self, watch: damage.RunWatch | None = None) -> None:
        self.watch = watch
        self.damaged: RunDamagedError | None = None  # set once damage is found

    def _damage(self) -> RunDamagedError | None:
        found = self.watch.damage() if self.watch is not None else []
        return damage.error(self.watch.index_path.parent, found) if self.watch and found else None

    def check(self) -> None:
        """Raise the damage that something else did to the run's record (before a write)."""
        if self.damaged is None:
            self.damaged = self._damage()
        if self.damaged is not None:
            raise self.damaged

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """A write or read of the record: when it fails and the record is damaged, the error
        says what is damaged."""
        try:
            yield
        except Exception as err:
            found = self._damage()
            if found is None:
                if not isinstance(err, RunDamagedError):
                    raise
                found = err
            self.damaged = found
            raise found from None
