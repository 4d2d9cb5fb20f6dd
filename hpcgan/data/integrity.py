"""What training reads is checked against the checksums written with the file (docs/data.md,
"Checksums during training"): bit rot on a parallel file system, or a file changed after
conversion, stops the run with one line naming the file and the chunk instead of training on
the damaged values.

- /images: each chunk against its /images_crc32 entry the first time this process reads any
  of it. A read that touches a chunk not yet checked reads the whole chunk (the one extra cost:
  up to a chunk per run read, in the first epoch) and takes its rows from that; later reads of
  a checked chunk are plain reads. So damage present when a chunk is first read is caught;
  damage that appears after that, during the same process, is caught by the next run (resume)
  or by ``data_prep verify``.
- /labels and /conditions carry one CRC-32 each (not per chunk): both are checked whole when
  the reader opens the file, before its first batch.

Files written before checksums existed are read unchecked, as before.
"""

from __future__ import annotations

import h5py
import numpy as np

from hpcgan.data import conditions
from hpcgan.data.chunks import chunk_crc32s, chunk_span
from hpcgan.data.format import CHECKSUMS, SchemaError, labels_crc32
from hpcgan.errors import one_line


def _damaged(path: str, what: str) -> SchemaError:
    return SchemaError(
        f"{path}: {what} fails its CRC-32 checksum: the file was modified or damaged after it "
        f"was written (`python -m data_prep verify {path}` checks every chunk)"
    )


class ChunkCheck:
    """Reads runs of /images, checking each chunk once per process (see the module's notes)."""

    def __init__(self, path: str, f: h5py.File, chunk: int) -> None:
        self.path, self.chunk = path, chunk
        images = f["images"]
        self.n = len(images)
        stored = f.get(CHECKSUMS)
        self.stored = None if stored is None else stored[()]  # [K] uint32
        chunks = -(-self.n // chunk)
        if self.stored is not None and self.stored.shape != (chunks,):
            raise SchemaError(
                f"{path}: /{CHECKSUMS} holds {self.stored.size} checksums for {chunks} chunks"
            )
        self.checked = np.zeros(chunks, dtype=bool)
        self._check_whole(f)

    def _check_whole(self, f: h5py.File) -> None:
        """/labels and /conditions against their one CRC-32 each."""
        stored = f.attrs.get("labels_crc32")
        if stored is not None and "labels" in f and int(stored) != labels_crc32(f["labels"]):
            raise _damaged(self.path, "/labels")
        stored = f.attrs.get(conditions.CHECKSUM)
        if stored is not None and conditions.DATASET in f:
            if int(stored) != conditions.crc32(f[conditions.DATASET]):
                raise _damaged(self.path, f"/{conditions.DATASET}")

    def read(self, images: h5py.Dataset, out: np.ndarray, a: int, b: int, pos: int) -> None:
        """Samples [a, b) of ``images`` into ``out[pos : pos + b - a]``, every chunk they touch
        checked (a SchemaError naming the file and the chunk if one fails)."""
        first, stop = a // self.chunk, (b - 1) // self.chunk + 1
        try:
            if self.stored is None or self.checked[first:stop].all():
                images.read_direct(out, np.s_[a:b], np.s_[pos : pos + b - a])
                return
            lo, hi = first * self.chunk, min(self.n, stop * self.chunk)
            block = images[lo:hi]  # [hi - lo, C, *S]: the whole chunks
        except OSError as err:  # e.g. a compressed chunk that no longer decompresses
            span = f"samples {a}..{b - 1}"
            raise SchemaError(f"{self.path}: cannot read /images {span} ({one_line(err)})") from err
        bad = np.flatnonzero(chunk_crc32s(block, self.chunk) != self.stored[first:stop])
        if len(bad):
            k = first + int(bad[0])
            raise _damaged(self.path, f"/images chunk {k} ({chunk_span(k, self.chunk, self.n)})")
        self.checked[first:stop] = True
        out[pos : pos + b - a] = block[a - lo : b - lo]
