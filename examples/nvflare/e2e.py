"""A real NVIDIA FLARE federated run whose every job container is launched by mount-plan
(``mount_plan.nvflare``): run by .ci/nvflare-e2e, which builds the image and the environment.

What it does, in order:
1. a POC project (``nvflare poc prepare``): a server and two clients, ports of its own;
2. a Docker bridge network of its own; the parents (server and client processes) run on this
   machine, their internal listeners on the network's gateway address, so the job containers
   reach their parents at ``tcp://<gateway>:<port>`` (no host networking);
3. every site's ``local/resources.json``: FLARE's process launcher replaced by
   ``mount_plan.nvflare.ServerJobLauncher`` / ``ClientJobLauncher`` (the only change);
4. the server and the two clients as processes; jobs submitted with FLARE's API:
   a numpy scatter-and-gather of ROUNDS rounds, and the adversarial jobs (read another job's
   directory, write startup/, plant a set-uid file), with a second numpy job after them;
5. checks: the global model at the server is the initial one + ROUNDS; every adversarial job
   FLARE reports as failed and its attacks refused or neutralised; the jobs launched; then
   stops everything and checks nothing is left (containers, processes, job directory locks).

Exit status 0 only when every check holds.
"""

import argparse
import glob
import io
import re
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import jobs  # noqa: E402

CLIENTS = ["site-1", "site-2"]
ADMIN = "admin@nvidia.com"
LABEL = "mount-plan-nvflare-e2e"
FAILED = []


def log(*args):
    print("nvflare-e2e:", *args, flush=True)


def check(ok, what):
    log(("ok    " if ok else "FAILED ") + what)
    if not ok:
        FAILED.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_yml(path, port):
    with open(path, "w") as f:
        f.write(f"""api_version: 3
name: mpe2e
description: mount-plan's FLARE end-to-end run
participants:
  - name: server
    type: server
    org: nvidia
    default_host: localhost
    fed_learn_port: {port}
  - name: {ADMIN}
    type: admin
    org: nvidia
    role: project_admin
""" + "".join(f"""  - name: {c}
    type: client
    org: nvidia
""" for c in CLIENTS) + """builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args:
      config_folder: config
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
""")


def configure_site(site_dir, server, args, gateway, network, run_id, job_logs):
    """resources.json: FLARE's process launcher replaced by mount-plan's; comm_config.json:
    the internal listener (job to parent) on the network's gateway."""
    local = os.path.join(site_dir, "local")
    with open(os.path.join(local, "resources.json.default")) as f:
        resources = json.load(f)
    cls = "ServerJobLauncher" if server else "ClientJobLauncher"
    launcher = {
        "id": "process_launcher",
        "path": f"mount_plan.nvflare.{cls}",
        "args": {
            "workspace": site_dir,
            "network": network,
            "default_python_path": "/opt/nvflare/bin/python",
            "runtime": args.runtime,
            "parent_host": gateway,
            "labels": {LABEL: run_id},
            "stop_grace": 5,
            "job_output": job_logs,
        },
    }
    comps = [c for c in resources["components"] if c.get("id") != "process_launcher"]
    resources["components"] = comps + [launcher]
    if resources.get("class_allow_list") is not None:
        resources["class_allow_list"].append(f"mount_plan.nvflare.{cls}")
    if server:
        # The parent's storage in the run's own directory, not /tmp/nvflare.
        base = os.path.join(os.path.dirname(site_dir), "server-storage")
        resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = f"{base}/snapshot"
        for c in resources["components"]:
            if c.get("id") == "job_manager":
                c["args"]["uri_root"] = f"{base}/jobs"
    with open(os.path.join(local, "resources.json"), "w") as f:
        json.dump(resources, f, indent=2)
    with open(os.path.join(local, "comm_config.json"), "w") as f:
        json.dump({"internal": {"scheme": "tcp", "resources": {
            "host": gateway, "listen_host": "0.0.0.0"}}}, f, indent=2)


def start_parent(site_dir, server, python, logs):
    module = "server.server_train" if server else "client.client_train"
    name = os.path.basename(site_dir)
    cmd = [python, "-u", "-m", f"nvflare.private.fed.app.{module}", "-m", site_dir, "-s",
           "fed_server.json" if server else "fed_client.json", "--set", "secure_train=true",
           "org=nvidia", "config_folder=config"]
    if not server:
        cmd.append(f"uid={name}")
    out = open(os.path.join(logs, f"{name}.log"), "wb")
    return subprocess.Popen(cmd, cwd=site_dir, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def job_status(session, job_id):
    return session.get_job_meta(job_id).get("status", "")


def wait_jobs(session, job_ids, timeout):
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        status = {j: job_status(session, j) for j in job_ids}
        if all(s.startswith("FINISHED") for s in status.values()):
            return status
        time.sleep(2)
    return status


def global_model(session, job_id, dest):
    path = session.download_job_result(job_id, dest)
    found = []
    for npy in glob.glob(os.path.join(path, "**", "*.npy"), recursive=True):
        found.append(npy)
    for z in glob.glob(os.path.join(path, "**", "*.zip"), recursive=True):
        with zipfile.ZipFile(z) as archive:
            for name in archive.namelist():
                if name.endswith(".npy"):
                    found.append((z, name))
    for item in found:
        if isinstance(item, tuple):
            with zipfile.ZipFile(item[0]) as archive:
                data = np.load(io.BytesIO(archive.read(item[1])))
            where = f"{item[0]}!{item[1]}"
        else:
            data = np.load(item)
            where = item
        if "server" in where or "app_server" in where:
            return data, where
    return None, f"no server model in {path} ({found})"


def finished_rounds(result_dir):
    """The rounds a server job's log (in its downloaded result) says finished."""
    found = set()
    for path in glob.glob(os.path.join(result_dir, "**", "log.txt"), recursive=True):
        with open(path, errors="replace") as f:
            found.update(int(r) for r in re.findall(r"Round (\d+) finished", f.read()))
    return sorted(found)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image", required=True)
    p.add_argument("--runtime", default="docker")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    python = sys.executable
    bin_dir = os.path.dirname(python)
    env_path = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["PATH"] = env_path
    run_id = os.urandom(4).hex()
    work = args.work or tempfile.mkdtemp(prefix="mount-plan-nvflare-e2e-", dir="/var/tmp")
    os.chmod(work, 0o755)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    network = f"{LABEL}-{run_id}"
    parents = {}
    timings = {}
    t0 = time.monotonic()
    import docker
    client = docker.from_env()
    try:
        # 1. the project
        port = free_port()
        project = os.path.join(work, "project.yml")
        project_yml(project, port)
        poc = os.path.join(work, "poc")
        env = dict(os.environ, NVFLARE_POC_WORKSPACE=poc)
        subprocess.run([os.path.join(bin_dir, "nvflare"), "poc", "prepare", "-i", project,
                        "--force"], env=env, check=True, stdout=subprocess.DEVNULL)
        prod = glob.glob(os.path.join(poc, "*", "prod_00"))[0]
        log(f"POC project in {prod}, server port {port}")
        # 2. the network
        net = client.networks.create(network, driver="bridge", labels={LABEL: run_id})
        net.reload()
        gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
        log(f"network {network}: the jobs reach their parents at {gateway} (the gateway)")
        # 3. the launchers
        job_logs = os.path.join(logs, "jobs")
        for site in ["server"] + CLIENTS:
            configure_site(os.path.join(prod, site), site == "server", args, gateway,
                           network, run_id, job_logs)
        # 4. the parents
        parents["server"] = start_parent(os.path.join(prod, "server"), True, python, logs)
        time.sleep(5)
        for c in CLIENTS:
            parents[c] = start_parent(os.path.join(prod, c), False, python, logs)
        from nvflare.fuel.flare_api.flare_api import new_secure_session
        session = None
        deadline = time.monotonic() + 120
        while session is None:
            try:
                session = new_secure_session(ADMIN, os.path.join(prod, ADMIN), timeout=10)
            except Exception as e:  # noqa: BLE001 - the server is starting
                if time.monotonic() > deadline:
                    raise
                log(f"waiting for the server: {e}")
                time.sleep(3)
        while True:
            info = session.get_system_info()
            names = sorted(ci.name for ci in info.client_info)
            if names == sorted(CLIENTS):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"clients connected: {names}")
            time.sleep(2)
        timings["start"] = time.monotonic() - t0
        log(f"server and clients {CLIENTS} up in {timings['start']:.0f} s")

        # 5. the jobs
        jobs_dir = os.path.join(work, "jobs")
        image, py = args.image, "/opt/nvflare/bin/python"
        t1 = time.monotonic()
        sag = session.submit_job(jobs.numpy_sag(jobs_dir, "numpy-sag", CLIENTS, args.rounds,
                                                image, py))
        log(f"submitted numpy-sag ({args.rounds} rounds): {sag}")
        status = wait_jobs(session, [sag], 900)
        timings["numpy-sag"] = time.monotonic() - t1
        check(status[sag] == "FINISHED:COMPLETED",
              f"numpy-sag {sag}: {status[sag]} in {timings['numpy-sag']:.0f} s")
        model, where = global_model(session, sag, os.path.join(work, "results"))
        expected = np.array(jobs.INITIAL) + args.rounds
        check(model is not None and np.allclose(model, expected),
              f"the global model at the server after {args.rounds} rounds is initial + "
              f"{args.rounds}: {None if model is None else model.tolist()} ({where})")
        rounds = finished_rounds(os.path.join(work, "results", sag))
        check(rounds == list(range(args.rounds)),
              f"rounds the server job finished (its log.txt): {rounds}")

        # the adversaries, then a numpy job after them
        t2 = time.monotonic()
        adversaries = {}
        for attack in ("read-other-job", "write-startup", "plant-setuid"):
            jd = jobs.adversary(jobs_dir, f"adversary-{attack}", CLIENTS, attack, image, py,
                                victim_dir=sag)
            adversaries[attack] = session.submit_job(jd)
            log(f"submitted adversary-{attack}: {adversaries[attack]}")
        after = session.submit_job(jobs.numpy_sag(jobs_dir, "numpy-after", CLIENTS,
                                                  args.rounds, image, py))
        log(f"submitted numpy-after: {after}")
        status = wait_jobs(session, list(adversaries.values()) + [after], 900)
        timings["adversaries"] = time.monotonic() - t2
        for attack, job_id in adversaries.items():
            check(status[job_id] not in ("FINISHED:COMPLETED", "") and
                  status[job_id].startswith("FINISHED"),
                  f"FLARE reports adversary-{attack} {job_id} as failed: {status[job_id]}")
            # A client whose job failed first makes FLARE abort the job elsewhere: the other
            # client may never run the task. At least one ran it; every one that did failed.
            ran = [c for c in CLIENTS
                   if os.path.exists(os.path.join(prod, c, job_id, "attacks.json"))]
            check(ran != [], f"adversary-{attack} ran its attacks on {ran}")
            for c in ran:
                results = json.load(open(os.path.join(prod, c, job_id, "attacks.json")))
                log(f"{c} {attack}: {json.dumps(results)}")
                if attack == "read-other-job":
                    listed = next(r for r in results if r["attack"] == "list workspace root")
                    check(sorted(listed["detail"]) == sorted(["startup", "local", job_id]),
                          f"{c}: the workspace root shows only startup, local and the job")
                    check(all(r["result"] == "refused" for r in results[1:]) and
                          len(results) > 1, f"{c}: every read of another job refused")
                elif attack == "write-startup":
                    check(all(r["result"] == "refused" for r in results
                              if "scratch" not in r["attack"]),
                          f"{c}: every write to startup/ and local/ refused")
                    for path in ("startup/evil.py", "local/evil.json", "planted"):
                        check(not os.path.exists(os.path.join(prod, c, path)),
                              f"{c}: no {path} in the host's workspace")
                else:
                    planted = os.path.join(prod, c, job_id, "suid-python")
                    mode = os.stat(planted).st_mode if os.path.exists(planted) else 0
                    check(mode & 0o6000 == 0,
                          f"{c}: the planted file has no set-id bit on the host after the job "
                          f"(mode {oct(mode)}; in the container: {results[0]['detail']})")
        check(status[after] == "FINISHED:COMPLETED",
              f"numpy-after {after} (submitted after the adversaries): {status[after]}")
        model, where = global_model(session, after, os.path.join(work, "results-after"))
        check(model is not None and np.allclose(model, expected),
              f"numpy-after's global model: {None if model is None else model.tolist()}")

        # the jobs launched, from the launchers' logs
        launched = sorted(os.path.basename(p)[:-4] for p in glob.glob(f"{job_logs}/*.log"))
        log(f"job containers launched by mount_plan.nvflare (one log each): {len(launched)}")
        for name in launched:
            log(f"  launched {name}")
        check(len(launched) == 3 * (2 + len(adversaries)),
              "every job of the run (server and two clients each) was launched by mount-plan")
        try:
            session.close()
        except Exception:  # noqa: BLE001
            pass
    finally:
        t3 = time.monotonic()
        for name, proc in parents.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in parents.items():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Every container of the run is gone once its launcher stopped.
        deadline = time.monotonic() + 60
        left = client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})
        check(left == [], f"no container of the run left ({[c.name for c in left]})")
        for c in left:
            c.remove(force=True)
        try:
            client.networks.get(network).remove()
        except Exception as e:  # noqa: BLE001
            log(f"network {network}: {e}")
        procs = subprocess.run(["pgrep", "-f", work], capture_output=True, text=True).stdout
        check(procs.strip() == "", f"no process of the run left ({procs.split()})")
        locks = subprocess.run(["sh", "-c", f"cat /proc/locks; ls -l /proc/*/fd 2>/dev/null "
                                            f"| grep -c '{work}' || true"],
                               capture_output=True, text=True).stdout.splitlines()[-1]
        check(locks.strip() == "0", f"no open file (job directory lock) under the run "
                                    f"({locks.strip()})")
        timings["stop"] = time.monotonic() - t3
        log("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) +
            f", total {time.monotonic() - t0:.0f}")
        if FAILED or args.keep:
            log(f"the run's files are kept in {work} (logs in {logs})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if FAILED:
        log(f"{len(FAILED)} check(s) failed")
        return 1
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
