"""BLAS / OpenMP at one thread in a benchmark's process and in the servers it starts.

Imported by the benchmarks first, before numpy is imported (numpy's BLAS reads these
variables once, at its import): timings then measure the app's own parallelism, not the
BLAS threads' contention on the machine's 2 cores. ``VARIABLES`` is also set in the
environment of the servers a benchmark starts.
"""

import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in VARIABLES:
    os.environ[_name] = "1"
