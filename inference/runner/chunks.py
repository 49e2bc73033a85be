"""How a batch's images are cut into pipeline calls ("chunks"), pure.

Images run in chunks of at most `max_batch` (`ATELIER_WORKER_MAX_BATCH`), in the batch's order;
images of different jobs share a chunk (cross-member batching). One more cut, as A1111 does: a
job with a batch count (`n_iter` > 1) runs each iteration in chunks of its own, never two of its
iterations in one call. That is what A1111's Skip acts on: a skip drops the job's current chunk
(the images being made now) and the job goes on with its next iteration (`inference/runner/batch.py`).
The cost is one pipeline call per iteration for such jobs, which is A1111's own cost.

The layout is a function of the jobs in order (each cut depends only on the images before it),
so the claim stage lays out each job as it claims it and the spec builder finds the same cuts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkLayout:
    """The chunks laid out so far: `starts`, each chunk's first image position."""

    max_batch: int
    starts: tuple[int, ...] = ()
    size: int = 0  # images laid out so far
    last_size: int = 0  # images in the last chunk

    def with_job(self, images: int, per_iteration: int) -> tuple[ChunkLayout, range, range]:
        """This layout with a job of `images` images (`per_iteration` per batch-count iteration)
        after it: (the new layout, the job's image positions, the chunk indexes they fall in)."""
        starts, size, last = list(self.starts), self.size, self.last_size
        first_chunk = len(starts)
        for offset in range(images):
            new_iteration = offset > 0 and 0 < per_iteration < images and offset % per_iteration == 0
            if not starts or last >= self.max_batch or new_iteration:
                starts.append(size)
                last = 0
            if offset == 0:
                first_chunk = len(starts) - 1
            size += 1
            last += 1
        layout = ChunkLayout(self.max_batch, tuple(starts), size, last)
        return layout, range(self.size, size), range(first_chunk, len(starts) if images else first_chunk)

    def chunks(self) -> list[range]:
        """Each chunk's image positions."""
        ends = (*self.starts[1:], self.size)
        return [range(start, end) for start, end in zip(self.starts, ends, strict=True)]


def layout_of(jobs: list[tuple[int, int]], max_batch: int) -> ChunkLayout:
    """The layout of (images, images per iteration) jobs, in order."""
    layout = ChunkLayout(max_batch)
    for images, per_iteration in jobs:
        layout, _images, _chunks = layout.with_job(images, per_iteration)
    return layout
