"""The same launcher on mount-plan. The name guard and the mount list are gone: the plan owns
both, and refuses (with a rule id) what the hand-written guard let through.

Two ways, pick one:
- keep docker-py: `containers.run(..., mounts=plan.docker_mounts(), working_dir=plan.workdir)`;
- or `mount_plan.launch()`: the whole lifecycle in Rust (host check, create, audit, start,
  stream, wait, remove; Ctrl-C removes the container), on Docker or Podman.
"""

import sys

import mount_plan

LAYOUT = mount_plan.Layout(
    container_root="/var/tmp/nvflare/workspace",  # R, as the reference launcher has it
    root="scratch", scratch_size=64 << 20,        # its sticky root, but with a size cap
    # extra_mounts=[{"source": "/datasets/mnist", "target": "/data/mnist", "read_only": True}],
)


def launch_with_docker_py(client, image, command, host_workspace, job_id):
    plan = mount_plan.plan(host_workspace, job_id, layout=LAYOUT)   # PlanError: .rule, .value
    # No link followed, no other filesystem, W/J pinned by (dev, inode): HostCheckError.
    plan = mount_plan.verify(plan).plan
    container = client.containers.run(
        image, command, detach=True,
        mounts=plan.docker_mounts(), working_dir=plan.workdir,
        security_opt=["no-new-privileges"],  # Docker's stand-in for nosuid on binds
        network_mode="none")
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)


def launch_with_mount_plan(image, command, host_workspace, job_id, runtime="docker"):
    plan = mount_plan.plan(host_workspace, job_id, layout=LAYOUT)
    verified = mount_plan.verify(plan, create_job_dir="fresh")
    return mount_plan.launch(verified, image, command, runtime=runtime,
                             accept_missing=["noexec"] if runtime == "docker" else [])


if __name__ == "__main__":
    # python mount_plan_launcher.py HOST_WORKSPACE JOB_ID IMAGE CMD...
    ws, job, image, *cmd = sys.argv[1:]
    try:
        sys.exit(launch_with_mount_plan(image, cmd, ws, job))
    except mount_plan.PlanError as e:
        sys.exit(f"refused by rule {e.rule}: {e}")
