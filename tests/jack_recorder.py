"""The recording half of test_live_jack.Recorder, in a process of its own: a JACK client whose process
callback copies its input port into shared memory, so that nothing the test process does (a garbage
collection, a thread holding the GIL) can make it late.

    python jack_recorder.py SERVER CLIENT_NAME SHM_NAME FRAMES GAP_SLOTS

The shared block holds a header of int64 (frames recorded, JACK's clock frames lost, xruns, gaps), then
GAP_SLOTS (buffer position, frames lost) pairs, then FRAMES float32 samples. It prints "ready" once
active, and stops when its standard input closes.
"""

from __future__ import annotations

import sys
from multiprocessing import resource_tracker, shared_memory

import jack
import numpy as np

HEADER = 4


def main() -> None:
    server, name, shm_name, frames, slots = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    shm = shared_memory.SharedMemory(name=shm_name)
    resource_tracker.unregister(shm._name, "shared_memory")  # the test process owns it: not unlinked at this one's exit
    head = np.ndarray(HEADER + 2 * slots, np.int64, shm.buf)
    buf = np.ndarray(frames, np.float32, shm.buf, offset=head.nbytes)
    client = jack.Client(name, servername=server, no_start_server=True)
    port = client.inports.register("in")
    expected = [None]  # the frame time of the cycle expected next

    def process(n: int) -> None:
        now = client.last_frame_time
        if expected[0] is not None and now != expected[0]:
            lost = (now - expected[0] + 2**31) % 2**32 - 2**31  # a late client's callbacks may see the clock go back
            head[1] += lost
            g = head[3]
            if g < slots:
                head[HEADER + 2 * g], head[HEADER + 2 * g + 1] = head[0], lost
            head[3] = g + 1
        expected[0] = (now + n) % 2**32
        at = head[0]
        if at + n <= frames:
            buf[at : at + n] = port.get_array()
            head[0] = at + n

    def xrun(delay: float) -> None:
        head[2] += 1

    client.set_process_callback(process)
    client.set_xrun_callback(xrun)
    client.activate()
    print("ready", flush=True)
    sys.stdin.read()
    client.deactivate()
    client.close()
    del head, buf
    shm.close()


if __name__ == "__main__":
    main()
