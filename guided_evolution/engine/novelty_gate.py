"""Novelty rejection in the engine (``[evolution.novelty] distance``): the archive of evaluated
variants' segments kept current from the run's reader (one per island: a proposal is compared
within its island), optional embedding vectors, the ``near_duplicate`` events, and the
re-proposal loop the proposers share."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from guided_evolution.config import GeConfig
from guided_evolution.engine.reader import RunReader
from guided_evolution.engine.recorder import Recorder
from guided_evolution.evolution.novelty import NearDuplicate, NoveltyArchive, new_keys
from guided_evolution.evolution.operators import Child, Rejected
from guided_evolution.evolution.plan import Plan
from guided_evolution.llm.embeddings import EmbeddingClient, EmbeddingError

Repropose = Callable[[NearDuplicate, int, Child], Awaitable[Child]]


class NoveltyGate:
    """``[evolution.novelty] distance``: is a proposal's new code within that distance of an
    evaluated variant's (``evolution/novelty.py``)?

    The archive holds the variants of earlier generations that have an evaluation, read once per
    generation (so, with ``overlap_tail = 0``, the same seed rejects the same proposals), and the
    plan's parents. With islands (``[evolution.islands] count > 1``) each island has its own
    archive, as the islands are meant to evolve apart: the variants born there and those that
    migrated in (the checkpoints' island populations), and its plans' parents; the segments'
    token sequences and compared pairs are shared (one ``DistanceCache``). With
    ``[evolution.novelty] embedding_model``, the distance is the cosine distance of the segments'
    embeddings; if the model fails, one warning and the token distance from then on.
    """

    def __init__(self, cfg: GeConfig, source: RunReader, log: Recorder) -> None:
        self.source = source
        self.log = log  # the near_duplicate and warning events
        self.threshold = cfg.evolution.novelty.distance
        self.islands = cfg.evolution.islands.count > 1
        self.archives: dict[int, NoveltyArchive] = {}
        self.synced = -1  # the archives hold the evaluated variants of generations below this
        self.embedder: EmbeddingClient | None = None
        if cfg.evolution.novelty.embedding_model:
            first = cfg.llm.models[0] if cfg.llm.models else None
            self.embedder = EmbeddingClient(
                cfg.evolution.novelty.embedding_model,
                api_base=cfg.llm.api_base or (first.api_base if first else None),
                api_key_env=first.api_key_env if first else None,
                timeout_s=cfg.llm.timeout_s,
            )

    @property
    def archive(self) -> NoveltyArchive:
        """The run's archive (without islands: island 0's)."""
        return self.archive_of(0)

    def archive_of(self, island: int) -> NoveltyArchive:
        """Island ``island``'s archive (one shared ``DistanceCache``)."""
        found = self.archives.get(island)
        if found is None:
            shared = next(iter(self.archives.values()), None)
            found = NoveltyArchive(self.threshold)
            if shared is not None:
                found.cache = shared.cache
            self.archives[island] = found
        return found

    def _homes(self, before: int) -> dict[str, set[int]]:
        """Each variant's islands up to generation ``before``: where it was born, and where the
        checkpoints of earlier generations hold it (a migrant)."""
        homes: dict[str, set[int]] = {}
        for v in self.source.index.variants():
            homes.setdefault(v.id, set()).add(v.island or 0)
        for g in range(before):
            checkpoint = self.source.index.get_generation(g)
            for island, members in enumerate(checkpoint.islands if checkpoint else []):
                for vid in members:
                    homes.setdefault(vid, set()).add(island)
        return homes

    def _sync(self, plan: Plan, parents: tuple[str, ...]) -> None:
        if plan.generation > self.synced:
            homes = self._homes(plan.generation) if self.islands else {}
            for vid in self.source.evaluated_before(plan.generation):
                for island in sorted(homes.get(vid, {0})):
                    archive = self.archive_of(island)
                    if vid not in archive:
                        archive.add(vid, self.source.segment_texts(vid))
            self.synced = plan.generation
        archive = self.archive_of(plan.island if self.islands else 0)
        for vid in parents:  # evaluated (they were selected); the seed in generation 0
            if vid not in archive:
                archive.add(vid, self.source.segment_texts(vid))

    async def check(self, plan: Plan, child: Child) -> NearDuplicate | None:
        """The evaluated variant the child's new segments nearly repeat, or None."""
        parents = tuple(dict.fromkeys([*plan.parents, *child.parents]))
        self._sync(plan, parents)
        codes = self.source.segment_texts(child.files)
        keys = new_keys(codes, [self.source.segment_texts(p) for p in parents])
        archive = self.archive_of(plan.island if self.islands else 0)
        vectors = None
        embedder = self.embedder
        if embedder is not None and keys:
            texts = archive.texts_for(codes, keys)
            try:
                found = await embedder.embed(list(texts.values()))
                vectors = dict(zip(texts, found, strict=True))
            except EmbeddingError as err:
                if self.embedder is not None:  # one warning, whichever check saw it first
                    self.log.warning(
                        f"[evolution.novelty] embedding_model {embedder.model} failed ({err.reason}): "
                        "novelty rejection uses the token distance from now on"
                    )
                self.embedder = None
        return archive.check(codes, keys, vectors)

    def details(self, near: NearDuplicate, action: str) -> dict[str, object]:
        """The ``near_duplicate`` event's fields."""
        return {
            "variant": near.variant,
            "distance": round(near.distance, 6),
            "threshold": near.threshold,
            "segments": list(near.keys),
            "metric": "tokens" if self.embedder is None else "embedding",
            "action": action,
        }

    async def novel(self, plan: Plan, child: Child, retries: int, repropose: Repropose) -> Child:
        """The child, or (``retries`` times) ``repropose(near, attempt, child)`` while it nearly
        repeats an evaluated variant; then Rejected with the reason. Each near-duplicate found
        is a ``near_duplicate`` event (``action``: re-proposed or rejected)."""
        for attempt in range(retries + 1):
            near = await self.check(plan, child)
            if near is None:
                return child
            last = attempt == retries
            details = self.details(near, "rejected" if last else "re-proposed")
            if self.islands:
                details["island"] = plan.island
            self.log.near_duplicate(plan, details)
            if last:
                raise Rejected(near.reason)
            child = await repropose(near, attempt, child)
            note = f" (proposed again: the first try nearly repeated {near.variant})"
            child = dataclasses.replace(child, description=child.description + note)
        raise AssertionError("unreachable")
