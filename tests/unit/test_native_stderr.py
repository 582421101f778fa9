"""The driver's own C++ Ray notices are written to fd 2 past Python: the quiet session filters them there."""

import subprocess
import sys

SCRIPT = r"""
import os, sys, time
from pipelines.ray_utils import filtered_native_stderr
with filtered_native_stderr():
    os.write(2, b"kept before\n")
    os.write(2, b"[2026-12-07 20:45:05,797 E 997 997] core_worker.cc:2465: Actor with class name: 'MapWorker' "
                b"has constructor arguments in the object store and max_restarts > 0. If the arguments ...\n")
    os.write(2, b"scrape: 10/20 movies\r")  # a progress bar's line, passed on before its end
    time.sleep(0.3)
    os.write(2, b"[a C++ line in two parts, ")
    os.write(2, b"kept whole]\n")
    print("python's stderr too", file=sys.stderr)
print("after the block", file=sys.stderr)
"""


def test_ray_noise_on_fd_2_is_dropped_and_everything_else_passes_in_order():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == ("kept before\nscrape: 10/20 movies\r[a C++ line in two parts, kept whole]\n"
                                    "python's stderr too\nafter the block\n")
