"""Child process of the crash test: writes records from two threads until it is killed.

Usage: ``python -m tests.store_crash_writer STORE_DIR ACK_FILE FIRST_INDEX``. After each put
returns (the record is durable), one line ``index pack offset length`` is appended to
ACK_FILE and flushed, so the parent knows what was acknowledged when it kills us.
"""

from __future__ import annotations

import random
import sys
import threading

from duckpacs._core import Store


def payload(i: int) -> bytes:
    """Deterministic content for record ``i``: partly repetitive, odd and even lengths."""
    r = random.Random(i)
    n = r.randint(1, 40_000)
    return (r.randbytes(max(1, n // 4)) * 5)[:n]


def main() -> None:
    root, ack_file, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(root, writer_id=1, pack_size=256 << 10)
    out = open(ack_file, "a", encoding="ascii")  # noqa: SIM115 - lives until we are killed
    lock = threading.Lock()

    def worker(i: int) -> None:
        while True:
            loc = store.put(payload(i))
            with lock:
                out.write(f"{i} {loc[0]} {loc[1]} {loc[2]}\n")
                out.flush()
            i += 2

    threads = [threading.Thread(target=worker, args=(first + t,), daemon=True) for t in (0, 1)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
