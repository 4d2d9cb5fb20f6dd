"""Under mpirun: every rank reads its slices of one epoch; rank 0 prints what each rank read.

Usage: read_epoch.py FILE.h5 BATCH SEGMENT   (labels in FILE are the sample indices)
"""

import json
import sys

from mpi4py import MPI

from hpcgan.data.format import read_info
from hpcgan.data.reader import ShardReader
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import make_transform

path, batch, segment = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
comm = MPI.COMM_WORLD
info = read_info(path)
plan = ShardPlan(info.n, batch, segment, seed=11)
reader = ShardReader(info, plan, comm.rank, comm.size, make_transform(info, "auto"))
per_batch = []
for b in range(plan.batches_per_epoch):
    _images, labels, _conditions = reader.read(b)
    per_batch.append(labels.tolist())
gathered = comm.gather(per_batch, root=0)
if comm.rank == 0:
    print(json.dumps({"n": info.n, "batches": plan.batches_per_epoch, "ranks": gathered}))
