"""check_name() and plan() called from Python against the reference launcher's own name guard
(examples/python/reference_launcher.py), measured in one run so the figures share the
machine's state. Prints one row per case: best and median microseconds per call over REPEATS
rounds of NUMBER calls each.

    python crates/mount-plan-py/bench.py [--repeats 15] [--number 20000]
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import mount_plan

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "python"))
import reference_launcher  # noqa: E402  (needs docker-py only for its imports)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--number", type=int, default=20000)
    a = ap.parse_args()

    ws = tempfile.mkdtemp(prefix="mp-bench-")
    for d in ("startup", "local", "job-1"):
        os.mkdir(os.path.join(ws, d))
    layout = mount_plan.Layout()
    cases = [
        ("reference guard (accepted job-1)",
         lambda: reference_launcher.check_job_name(ws, "job-1")),
        ("reference guard + mount list",
         lambda: (reference_launcher.check_job_name(ws, "job-1"),
                  reference_launcher.job_mounts(ws, "job-1"))),
        ("mount_plan.check_name('job-1')", lambda: mount_plan.check_name("job-1")),
        ("mount_plan.check_name('Startup') -> PlanError", refused),
        ("layout.job('job-1')", lambda: layout.job("job-1")),
        ("mount_plan.plan(W, 'job-1')", lambda: mount_plan.plan(ws, "job-1")),
        ("plan(W, 'job-1').docker_mounts()",
         lambda: mount_plan.plan(ws, "job-1").docker_mounts()),
        ("mount_plan.verify(plan(W, 'job-1'))",
         lambda: mount_plan.verify(mount_plan.plan(ws, "job-1"))),
    ]
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"mount_plan {mount_plan.__version__}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.2f}; {a.repeats} rounds x {a.number} calls")
    print(f"{'case':52} {'best_us':>9} {'median_us':>10}")
    rows = {}
    for name, fn in cases:
        number = a.number if "verify" not in name else max(1, a.number // 10)
        times = timeit.repeat(fn, repeat=a.repeats, number=number)
        per = [t / number * 1e6 for t in times]
        rows[name] = statistics.median(per)
        print(f"{name:52} {min(per):9.3f} {statistics.median(per):10.3f}")
    ref = rows["reference guard (accepted job-1)"]
    for name in ("mount_plan.check_name('job-1')", "mount_plan.plan(W, 'job-1')"):
        print(f"reference guard / {name}: {ref / rows[name]:.1f}x")
    shutil.rmtree(ws)


def refused():
    try:
        mount_plan.check_name("Startup")
    except mount_plan.PlanError:
        pass


if __name__ == "__main__":
    main()
