"""The real trainer, but the checkpoint of one step is written slowly: half of its bytes, a
line "HALF-WRITTEN step-N.pt" on stdout, a pause of SECONDS, then the rest; so a signal sent
on that line lands inside the write (hpcgan.files.atomic_write), deterministically.

Usage: slow_checkpoint.py STEP SECONDS key=value...
"""

import io
import sys
import time

import torch

from hpcgan import run_state, train
from hpcgan.files import atomic_write

slow_step, pause = int(sys.argv[1]), float(sys.argv[2])
original_save_as = run_state.save_as


def slow_save_as(path, state):
    if path.name != run_state.checkpoint_name(slow_step):
        return original_save_as(path, state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            print(f"HALF-WRITTEN {path.name}", flush=True)
            time.sleep(pause)  # a signal's handler runs here; the sleep then goes on (PEP 475)
            f.write(data[len(data) // 2 :])

    return atomic_write(path, write)


run_state.save_as = slow_save_as
sys.exit(train.main(sys.argv[3:]))
