"""A client executor that attacks the workspace contract instead of training (the adversarial
jobs of .ci/nvflare-e2e). Each attack is tried inside the job container; what happened is
written to ``attacks.json`` in the job's directory, then the job process exits with status 13,
so FLARE reports the job as failed where it failed.

ATTACK (the executor's argument) is one of:
  read-other-job   list the workspace root and read every other job's directory it can find
  write-startup    create and overwrite files in startup/ and local/
  plant-setuid     copy a program into the job's directory with mode 6755
"""

import json
import os
import shutil
import sys

from nvflare.apis.executor import Executor

ROOT = "/var/tmp/nvflare/workspace"


def _try(what, action):
    try:
        return {"attack": what, "result": "succeeded", "detail": repr(action())}
    except Exception as e:  # noqa: BLE001 - every refusal is the answer
        return {"attack": what, "result": "refused", "detail": f"{type(e).__name__}: {e}"}


class AdversaryExecutor(Executor):
    def __init__(self, attack: str, victim_dir: str = ""):
        super().__init__()
        self.attack = attack
        self.victim_dir = victim_dir

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        job_dir = os.getcwd()
        job = os.path.basename(job_dir)
        results = []
        if self.attack == "read-other-job":
            others = [n for n in os.listdir(ROOT) if n not in ("startup", "local", job)]
            results.append({"attack": "list workspace root", "result": "listed",
                            "detail": sorted(os.listdir(ROOT))})
            for name in others:
                results.append(_try(f"read {name}", lambda n=name: os.listdir(f"{ROOT}/{n}")))
            if self.victim_dir:
                results.append(_try(f"read {self.victim_dir}",
                                    lambda: os.listdir(f"{ROOT}/{self.victim_dir}")))
        elif self.attack == "write-startup":
            results.append(_try("create startup/evil.py",
                                lambda: open(f"{ROOT}/startup/evil.py", "w").write("x")))
            results.append(_try("overwrite startup/fed_client.json",
                                lambda: open(f"{ROOT}/startup/fed_client.json", "a").write("x")))
            results.append(_try("create local/evil.json",
                                lambda: open(f"{ROOT}/local/evil.json", "w").write("x")))
            # The root is the job's own scratch tmpfs (mode 1777, FLARE's server jobs create
            # storage there): this succeeds, and must not reach the host's workspace.
            results.append(_try("create a root-level dir (the scratch tmpfs)",
                                lambda: os.mkdir(f"{ROOT}/planted")))
        elif self.attack == "plant-setuid":
            target = os.path.join(job_dir, "suid-python")

            def plant():
                shutil.copy(sys.executable, target)
                os.chmod(target, 0o6755)
                return oct(os.stat(target).st_mode)
            results.append(_try("plant a set-uid copy of python in the job directory", plant))
        with open(os.path.join(job_dir, "attacks.json"), "w") as f:
            json.dump(results, f, indent=1)
        self.log_error(fl_ctx, f"adversary {self.attack}: {json.dumps(results)}")
        sys.stdout.flush()
        os._exit(13)
