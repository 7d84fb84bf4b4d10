"""A docker-py job launcher written the way the reference launcher is (see
docs/contract.md and the project's origin notes): a hand-written job-name guard and a
hand-built mount list. Kept here for comparison with `mount_plan_launcher.py`, and measured by
`crates/mount-plan-py/bench.py`. Its known weaknesses are listed in the README beside it.
"""

import os
import sys

import docker
from docker.types import Mount

WORKSPACE_ROOT = "/var/tmp/nvflare/workspace"  # R, inside the job container
RESERVED = ("startup", "local")


def check_job_name(host_workspace, job_id, allow_reserved=False):
    """The reference guard: a single plain child of the workspace, not reserved (exact
    match), not escaping the workspace once resolved, not itself a symlink."""
    if not job_id:
        raise ValueError("job id is empty")
    if os.path.isabs(job_id):
        raise ValueError(f"job id {job_id!r} is absolute")
    if os.path.normpath(job_id) != job_id:
        raise ValueError(f"job id {job_id!r} is not normalised")
    if job_id in (".", "..") or "/" in job_id:
        raise ValueError(f"job id {job_id!r} is not a single path component")
    if not allow_reserved and job_id in RESERVED:
        raise ValueError(f"job id {job_id!r} is reserved")
    workspace = os.path.realpath(host_workspace)
    child = os.path.join(host_workspace, job_id)
    resolved = os.path.realpath(child)
    if os.path.commonpath([workspace, resolved]) != workspace or resolved == workspace:
        raise ValueError(f"job id {job_id!r} escapes the workspace")
    if os.path.islink(child):
        raise ValueError(f"job directory {child!r} is a symlink")
    return child


def job_mounts(host_workspace, job_id, datasets=()):
    """The reference mount list: a tmpfs root (mode 0555, no size limit), startup/ and
    local/ read-only, the job directory read-write, datasets as configured."""
    mounts = [
        Mount(target=WORKSPACE_ROOT, source=None, type="tmpfs", tmpfs_mode=0o555),
        Mount(target=f"{WORKSPACE_ROOT}/startup", source=f"{host_workspace}/startup",
              type="bind", read_only=True),
        Mount(target=f"{WORKSPACE_ROOT}/local", source=f"{host_workspace}/local",
              type="bind", read_only=True),
        Mount(target=f"{WORKSPACE_ROOT}/{job_id}", source=f"{host_workspace}/{job_id}",
              type="bind", read_only=False),
    ]
    for source, target, read_only in datasets:
        mounts.append(Mount(target=target, source=source, type="bind", read_only=read_only))
    return mounts


def launch(client, image, command, host_workspace, job_id, datasets=()):
    check_job_name(host_workspace, job_id)
    container = client.containers.run(
        image, command, detach=True,
        mounts=job_mounts(host_workspace, job_id, datasets),
        working_dir=f"{WORKSPACE_ROOT}/{job_id}",
        network_mode="none")
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)


if __name__ == "__main__":
    # python reference_launcher.py HOST_WORKSPACE JOB_ID IMAGE CMD...
    ws, job, image, *cmd = sys.argv[1:]
    sys.exit(launch(docker.from_env(), image, cmd, ws, job))
