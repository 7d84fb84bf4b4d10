"""launch(): the Rust lifecycle (verify, create, audit, start, stream, wait, remove) on the real
Docker engine and on rootless Podman, from Python; a KeyboardInterrupt leaves no container."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mount_plan
from conftest import TEST_LABEL, default_sigint, make_workspace


def no_container_left(client, test_id):
    return client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={test_id}"}) == []


def test_launch_docker(docker_client, probe_image, workspace, test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir="fresh")
    chunks, events = [], []
    status = mount_plan.launch(
        verified, probe_image,
        ["sh", "-c", "pwd; echo oops >&2; echo result > out.txt; ls /workspace; exit 7"],
        accept_missing=["noexec"], labels={TEST_LABEL: test_id}, env={"MODE": "train"},
        on_output=lambda stream, data: chunks.append((stream, data)),
        on_event=events.append)
    assert status == 7
    out = b"".join(d for s, d in chunks if s == "stdout").decode()
    err = b"".join(d for s, d in chunks if s == "stderr").decode()
    assert out.split() == ["/workspace/job-2", "job-2", "local", "startup"]
    assert err == "oops\n"
    assert (workspace / "job-2" / "out.txt").read_text() == "result\n"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "launching" and kinds[-2:] == ["exited", "removed"], kinds
    assert "created" in kinds and "started" in kinds
    assert no_container_left(docker_client, test_id)


def test_launch_output_goes_to_sys_stdout(docker_client, probe_image, workspace, test_id,
                                          capsys):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    status = mount_plan.launch(verified, probe_image, ["sh", "-c", "echo to-out; echo to-err >&2"],
                               accept_missing=["noexec"], labels={TEST_LABEL: test_id})
    assert status == 0
    captured = capsys.readouterr()
    assert captured.out == "to-out\n" and captured.err == "to-err\n"


def test_docker_noexec_is_a_warning_unless_required(docker_client, probe_image, workspace,
                                                    test_id):
    # Docker cannot set noexec on binds: hardening, so the launch runs and says so once...
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    events = []
    status = mount_plan.launch(verified, probe_image, ["true"], labels={TEST_LABEL: test_id},
                               on_event=events.append)
    assert status == 0
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "noexec" in warnings[0], warnings
    # ...and a site that requires it is refused before anything is created.
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir="fresh")
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, probe_image, ["true"], labels={TEST_LABEL: test_id},
                          require=["noexec"])
    assert e.value.rule == "protection-unavailable" and e.value.value == "noexec"
    assert e.value.command_ran is False and e.value.container is None
    # The job directory the check created is released: the command never ran.
    assert not (workspace / "job-2").exists()
    assert no_container_left(docker_client, test_id)


def test_docker_warnings_are_the_clis(cli, docker_client, probe_image, workspace, test_id):
    """The same plan launched by the CLI and by Python on Docker: every warning and note the
    CLI prints on stderr is raised once as a RuntimeWarning, and nothing else is (one front
    door: mount-plan-run's `run`)."""
    args = ["launch", "--runtime", "docker", "--workspace", str(workspace), "--job", "job-1",
            "--image", probe_image, "--label", f"{TEST_LABEL}={test_id}", "--", "true"]
    done = subprocess.run([cli, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    prefix = "mount-plan: warning: "
    printed = [line[len(prefix):] for line in done.stderr.splitlines()
               if line.startswith(prefix)]
    assert printed, done.stderr  # Docker cannot set noexec on binds: at least that one
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert mount_plan.launch(verified, probe_image, ["true"],
                                 labels={TEST_LABEL: test_id}) == 0
    raised = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert raised == printed, (raised, done.stderr)
    assert no_container_left(docker_client, test_id)


def test_launch_errors(docker_client, workspace, test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "mount-plan-py-test/absent:never", ["true"],
                          accept_missing=["noexec"], labels={TEST_LABEL: test_id})
    assert (e.value.rule, e.value.value) == ("image-missing", "mount-plan-py-test/absent:never")
    assert not e.value.command_ran
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], env=["1BAD=x"])
    assert (e.value.rule, e.value.value) == ("env-key", "1BAD=x")
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], network="host")
    assert e.value.rule == "network-namespace"
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], labels={"io.mount-plan.job": "x"})
    assert e.value.rule == "label-reserved"
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], cap_add=["CHOWN", "mknod"])
    assert (e.value.rule, e.value.value) == ("capability-forbidden", "mknod")
    assert "device nodes" in str(e.value)
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], cap_add=["CAP_BOGUS"])
    assert (e.value.rule, e.value.value) == ("capability", "CAP_BOGUS")
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], socket="unix:///nonexistent.sock",
                          connect_timeout=2)
    assert (e.value.rule, e.value.value) == ("connect", "unix:///nonexistent.sock")
    # Issue 21, finding 6: a stop grace past the bound is refused before anything runs.
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.launch(verified, "busybox", ["true"], stop_grace=1e19)
    assert e.value.rule == "duration"
    assert not e.value.command_ran
    with pytest.raises(TypeError):
        mount_plan.launch(mount_plan.plan(workspace, "job-1"), "busybox", ["true"])
    assert no_container_left(docker_client, test_id)


def test_launch_rootless_podman(rootless_podman, tmp_path):
    url, uid, gid, image = rootless_podman
    w = make_workspace(owner=(uid, gid))
    try:
        verified = mount_plan.verify(mount_plan.plan(w, "job-1"))
        chunks = []
        status = mount_plan.launch(
            verified, image, ["sh", "-c", "pwd; id -u; touch made-here; exit 4"],
            runtime="podman", socket=url, userns="keep-id",
            on_output=lambda s, d: chunks.append(d))
        assert status == 4
        assert b"".join(chunks).decode().split() == ["/workspace/job-1", str(uid)]
        # keep-id: what the job writes belongs to the rootless service's user.
        assert os.stat(w / "job-1" / "made-here").st_uid == uid
    finally:
        shutil.rmtree(w, ignore_errors=True)


INTERRUPTED = textwrap.dedent("""
    import sys, mount_plan
    ws, image, label, runtime, socket, userns = sys.argv[1:7]
    verified = mount_plan.verify(mount_plan.plan(ws, "job-1"))
    try:
        mount_plan.launch(verified, image, ["sleep", "120"], runtime=runtime,
                          socket=socket or None, userns=userns or None,
                          accept_missing=["noexec"] if runtime == "docker" else [],
                          labels={label.split("=")[0]: label.split("=")[1]}, stop_grace=1,
                          on_event=lambda e: print(e["event"], e.get("container", ""),
                                                   flush=True))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(42)
    print("not interrupted", flush=True)
""")


def interrupt_launch(ws, image, label, runtime="docker", socket="", userns=""):
    """Run a launch in a child Python, SIGINT it once its container runs; (exit status,
    container id, seconds from SIGINT to exit)."""
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(ws), image, label, runtime,
                              socket, userns], stdout=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    container, sent = None, None
    for line in child.stdout:
        if line.startswith("created"):
            container = line.split()[1]
        if line.startswith("started"):
            time.sleep(0.5)
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
        if line.startswith(("interrupted", "not interrupted")):
            break
    code = child.wait(timeout=60)
    return code, container, time.monotonic() - sent if sent else None


def test_keyboard_interrupt_leaves_no_container_docker(docker_client, probe_image, workspace,
                                                       test_id):
    code, container, seconds = interrupt_launch(workspace, probe_image, f"{TEST_LABEL}={test_id}")
    assert code == 42, "the launch did not raise KeyboardInterrupt"
    assert container and seconds is not None and seconds < 15, seconds
    assert no_container_left(docker_client, test_id)
    import docker
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container)


def test_keyboard_interrupt_leaves_no_container_rootless_podman(rootless_podman):
    url, uid, gid, image = rootless_podman
    w = make_workspace(owner=(uid, gid))
    label = f"{TEST_LABEL}={os.urandom(6).hex()}"
    try:
        code, container, seconds = interrupt_launch(w, image, label, "podman", url)
        assert code == 42 and container, "the launch did not raise KeyboardInterrupt"
        left = subprocess.run(["podman", "--url", url, "ps", "-a", "-q", "--filter",
                               f"label={label}"], capture_output=True, text=True, check=True)
        assert left.stdout.strip() == ""
    finally:
        shutil.rmtree(w, ignore_errors=True)
