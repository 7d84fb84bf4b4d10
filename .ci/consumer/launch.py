"""A launcher using the mount_plan package as pip installed it from the sdist (run by
.ci/consumer-py in a fresh virtual environment, with the checkout hidden): plan, verify and
launch two jobs on Docker.

1. A job whose command checks, from inside the container, that the gate's executable was copied
   in and is not empty, and writes a marker into W/J: it must run and exit 0.
2. A job whose W/J is swapped for a link to another directory after verify pinned it: the gate
   must refuse it before the command runs (gate-refused, gate-bind-identity), so the gate
   itself ran and compared what the container got with the pins.

Usage: python launch.py W IMAGE RUN_LABEL (W exists, with startup/ and local/).
"""

import os
import pathlib
import sys

import mount_plan

w, image, label = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"mount_plan from {mount_plan.__file__}")
labels = {"mount-plan-consumer.run": label}

# 1. The gate lets a verified job run; the command sees the gate's executable.
job1 = mount_plan.verify(mount_plan.plan(str(w), "job-1"), create_job_dir="fresh")
script = ("test -s /.mount-plan/gate || { echo 'no gate in the container' >&2; exit 3; }; "
          'echo "inside: gate executable present, $(wc -c < /.mount-plan/gate) bytes"; '
          "echo ran > marker")
try:
    status = mount_plan.launch(job1, image, ["sh", "-c", script], labels=labels)
except mount_plan.LaunchError as e:
    sys.exit(f"job-1: {e} (rule {e.rule}, command ran: {e.command_ran})")
sys.stdout.flush()
if status != 0:
    sys.exit(f"job-1 exited {status}")
if (w / "job-1" / "marker").read_text() != "ran\n":
    sys.exit("job-1 wrote no marker")
print("job-1: ran through the gate, exit 0, marker written in W/job-1")

# 2. The gate refuses a job directory swapped after verify.
job2 = mount_plan.verify(mount_plan.plan(str(w), "job-2"), create_job_dir="fresh")
elsewhere = w.parent / "elsewhere"
elsewhere.mkdir()
moved = w / "verified-job-2"
os.rename(w / "job-2", moved)
os.symlink(elsewhere, w / "job-2")
try:
    status = mount_plan.launch(job2, image, ["sh", "-c", "echo ran > marker"], labels=labels)
except mount_plan.LaunchError as e:
    message = str(e)
    if e.rule != "gate-refused" or "gate-bind-identity" not in message:
        sys.exit(f"job-2 failed, but not by the gate: {e.rule}: {message}")
    if e.command_ran:
        sys.exit(f"job-2's command may have run: {message}")
else:
    sys.exit(f"job-2 ran in a swapped directory (exit {status})")
for d in (elsewhere, moved):
    if (d / "marker").exists():
        sys.exit(f"job-2's command ran in {d}")
print(f"job-2: refused by the gate before the command ran: {message}")
