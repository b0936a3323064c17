"""A training step when another process wants a core: libgomp's wait policies.

OpenMP threads that wait for work spin first (libgomp's default, about
300 000 rounds, ``OMP_WAIT_POLICY=active`` forever), then sleep
(``passive``: at once). On cores of their own, spinning saves the wake-up
of every kernel's team. When another process wants one of the cores, a
spinning thread uses up its share of the core while the team waits for it
at the next barrier, and every parallel region can cost a time slice.

For each policy, this runs ``benchmarks/profile_case.py train_step SHAPE
float32`` in a new process (libgomp reads the policy when it loads) at 1
and 2 threads, alone and beside ``--busy`` processes that spin in Python,
and prints the milliseconds per step::

    python benchmarks/contention.py --shape mnist --busy 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
POLICIES = ("default", "active", "passive")


def _step_ms(shape: str, threads: int, policy: str, seconds: float) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "profile_case.py"), "train_step", shape, "float32",
         "--threads", str(threads), "--seconds", str(seconds)],
        env=env, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([\d.]+) ms per call", out).group(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mnist")
    parser.add_argument("--busy", type=int, default=1,
                        help="processes spinning beside the loaded runs")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"train_step {args.shape} float32, ms per step (profile_case.py, {args.seconds:g} s "
          f"each); 'loaded': beside {args.busy} spinning process(es)")
    print(f"{'OMP_WAIT_POLICY':16s}{'1 thread':>10s}{'2 threads':>11s}"
          f"{'1 loaded':>10s}{'2 loaded':>10s}")
    for policy in POLICIES:
        quiet = [_step_ms(args.shape, n, policy, args.seconds) for n in (1, 2)]
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
        try:
            loaded = [_step_ms(args.shape, n, policy, args.seconds) for n in (1, 2)]
        finally:
            for process in busy:
                process.kill()
                process.wait()
        print(f"{policy:16s}{quiet[0]:10.1f}{quiet[1]:11.1f}{loaded[0]:10.1f}{loaded[1]:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
