"""Objects written as one new git pack: ``objects/pack/pack-<sum>.pack`` and its ``.idx``.

A generation's notes are ~185 objects (a note per child, the bucket trees, the root and the
commit). Loose, each is a file of its own: a new inode each, and on a file system that looks
past recently freed inodes for every new one (ext4 without a journal) that is most of their
cost. One pack is two files. The format is git's (pack version 2, idx version 2, whole objects,
no deltas); libgit2 and git read it as any pack. Trees are stored uncompressed (zlib level 0: a
notes bucket is mostly 20-byte ids, and compressing ~85 buckets of 26 KB took ~70 % of a later
batch's CPU at 100,000 notes; they take ~30 % more bytes until the compaction, ``git
pack-objects``, compresses them again). Blobs and commits get zlib's fastest level, as libgit2's
loose objects. Both files are written under temporary names in ``objects/pack`` (``tmp_*``: what
a killed writer leaves, ``GitStore.stale_temp_files``) and renamed into place, the ``.idx``
last: git sees a pack only once its index is there.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from guided_evolution.fsutil import atomic_write

KINDS = {"commit": 1, "tree": 2, "blob": 3}
_MAX_OFFSET = 1 << 31  # the idx's 4-byte offsets (a notes pack is far smaller)


def object_id(kind: str, data: bytes) -> bytes:
    """The raw (20-byte) git id of an object."""
    return hashlib.sha1(b"%s %d\0%s" % (kind.encode(), len(data), data)).digest()


def _entry_header(kind: int, size: int) -> bytes:
    """A pack entry's type and inflated size (4 bits, then 7 bits a byte, low bits first)."""
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def pack_bytes(objects: Iterable[tuple[bytes, str, bytes]]) -> tuple[bytes, bytes, bytes]:
    """(pack, idx, pack checksum) of ``objects`` (raw id, kind, data; each id once)."""
    entries = list(objects)
    pack = bytearray(b"PACK" + struct.pack(">II", 2, len(entries)))
    rows = []
    for oid, kind, data in entries:
        offset = len(pack)
        level = 0 if kind == "tree" else 1
        packed = _entry_header(KINDS[kind], len(data)) + zlib.compress(data, level)
        pack += packed
        rows.append((oid, zlib.crc32(packed), offset))
    if len(pack) >= _MAX_OFFSET:
        raise ValueError("a pack this large needs 8-byte offsets")
    checksum = hashlib.sha1(pack).digest()
    pack += checksum
    rows.sort()
    idx = bytearray(b"\xfftOc" + struct.pack(">I", 2))
    counts = [0] * 256
    for oid, _crc, _offset in rows:
        counts[oid[0]] += 1
    total = 0
    for count in counts:
        total += count
        idx += struct.pack(">I", total)
    idx += b"".join(oid for oid, _crc, _offset in rows)
    idx += b"".join(struct.pack(">I", crc) for _oid, crc, _offset in rows)
    idx += b"".join(struct.pack(">I", offset) for _oid, _crc, offset in rows)
    idx += checksum
    idx += hashlib.sha1(idx).digest()
    return bytes(pack), bytes(idx), checksum


def write_pack(
    pack_dir: Path, objects: Iterable[tuple[bytes, str, bytes]], fsync: bool = False
) -> Path | None:
    """Write ``objects`` (raw id, kind, data) as one pack in ``pack_dir``; its path without the
    suffix (None when there is nothing to write)."""
    unique = {oid: (oid, kind, data) for oid, kind, data in objects}
    if not unique:
        return None
    pack, idx, checksum = pack_bytes(unique.values())
    base = pack_dir / f"pack-{checksum.hex()}"
    for suffix, data in ((".pack", pack), (".idx", idx)):  # the .idx last: then git sees it
        atomic_write(base.with_suffix(suffix), data, prefix="tmp_ge_", mode=0o444, fsync=fsync)
    if fsync:
        dir_fd = os.open(pack_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return base
