"""start(): the launch lifecycle behind a handle (poll, wait with a timeout, terminate from
another thread, a KeyboardInterrupt while waiting), on the real Docker engine and on rootless
Podman. No container outlives its handle."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mount_plan
from conftest import TEST_LABEL, default_sigint, make_workspace


def containers_of(client, test_id):
    return client.containers.list(all=True, sparse=True,
                                  filters={"label": f"{TEST_LABEL}={test_id}"})


def podman_left(url, label):
    out = subprocess.run(["podman", "--url", url, "ps", "-a", "-q", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def wait_for(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_start_poll_wait_docker(docker_client, probe_image, workspace, test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    out = []
    began = time.monotonic()
    handle = mount_plan.start(verified, probe_image, ["sh", "-c", "sleep 2; echo done; exit 3"],
                              accept_missing=["noexec"], labels={TEST_LABEL: test_id},
                              on_output=lambda s, d: out.append(d))
    # It returned before the command could have ended.
    assert time.monotonic() - began < 2
    assert handle.job == "job-1"
    assert handle.poll() is None and not handle.done
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.2)
    assert handle.poll() is None
    assert wait_for(lambda: handle.command_ran)
    assert handle.container and containers_of(docker_client, test_id)
    assert handle.wait(timeout=60) == 3
    assert handle.poll() == 3 and handle.wait() == 3 and handle.done
    assert b"".join(out) == b"done\n"
    kinds = [e["event"] for e in handle.events]
    assert kinds[0] == "launching" and kinds[-2:] == ["exited", "removed"], kinds
    assert containers_of(docker_client, test_id) == []
    assert "exited 3" in repr(handle)


def test_start_refusal_is_the_handles_outcome(docker_client, workspace, test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir="fresh")
    handle = mount_plan.start(verified, "mount-plan-py-test/absent:never", ["true"],
                              accept_missing=["noexec"], labels={TEST_LABEL: test_id})
    with pytest.raises(mount_plan.LaunchError) as e:
        handle.wait(timeout=60)
    assert (e.value.rule, e.value.value) == ("image-missing", "mount-plan-py-test/absent:never")
    assert handle.command_ran is False and handle.container is None
    with pytest.raises(mount_plan.LaunchError):
        handle.poll()
    # The job directory the check created is released: the command never ran.
    assert not (workspace / "job-2").exists()
    # A bad option is refused by start itself, before anything runs.
    with pytest.raises(mount_plan.LaunchError) as e:
        mount_plan.start(verified, "busybox", ["true"], stop_grace=1e19)
    assert e.value.rule == "duration"
    with pytest.raises(ValueError):
        handle.wait(timeout=-1)


def test_terminate_from_other_threads_docker(docker_client, probe_image, workspace, test_id):
    """FLARE's job runner polls and waits from its threads and terminates from another."""
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    handle = mount_plan.start(verified, probe_image, ["sleep", "300"], stop_grace=1,
                              accept_missing=["noexec"], labels={TEST_LABEL: test_id})
    assert wait_for(lambda: any(e["event"] == "started" for e in handle.events))
    results, polls = [], []

    def waiter():
        try:
            handle.wait()
        except mount_plan.LaunchError as e:
            results.append(e.rule)

    def poller():
        while not handle.done:
            try:
                polls.append(handle.poll())
            except mount_plan.LaunchError:
                break
            time.sleep(0.01)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    threads += [threading.Thread(target=poller) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert handle.poll() is None and results == []
    began = time.monotonic()
    stopper = threading.Thread(target=handle.terminate)
    stopper.start()
    stopper.join(timeout=60)
    assert not stopper.is_alive()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    print(f"terminate: {time.monotonic() - began:.2f} s")
    assert results == ["cancelled"] * 3
    assert polls and set(polls) == {None}
    assert handle.done and handle.command_ran
    assert containers_of(docker_client, test_id) == []
    handle.terminate()  # nothing happens to a launch that ended


def test_dropped_handle_and_with_block_leave_nothing(docker_client, probe_image, workspace,
                                                    test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    with mount_plan.start(verified, probe_image, ["sleep", "300"], stop_grace=1,
                          accept_missing=["noexec"], labels={TEST_LABEL: test_id}) as handle:
        assert wait_for(lambda: handle.command_ran)
    assert handle.done and containers_of(docker_client, test_id) == []
    handle = mount_plan.start(verified, probe_image, ["sleep", "300"], stop_grace=1,
                              accept_missing=["noexec"], labels={TEST_LABEL: test_id})
    assert wait_for(lambda: handle.command_ran or handle.done, 120), handle.events
    assert handle.command_ran and not handle.done, (handle.events, handle.poll())
    assert containers_of(docker_client, test_id)
    del handle
    assert wait_for(lambda: containers_of(docker_client, test_id) == [])


def test_callback_exception_cancels(docker_client, probe_image, workspace, test_id):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))

    def boom(stream, data):
        raise RuntimeError("callback refused " + data.decode().strip())

    handle = mount_plan.start(verified, probe_image, ["sh", "-c", "echo hi; sleep 300"],
                              stop_grace=1, accept_missing=["noexec"],
                              labels={TEST_LABEL: test_id}, on_output=boom)
    with pytest.raises(RuntimeError, match="callback refused hi"):
        handle.wait(timeout=60)
    assert containers_of(docker_client, test_id) == []


def test_start_rootless_podman(rootless_podman):
    url, uid, gid, image = rootless_podman
    w = make_workspace(owner=(uid, gid))
    label = os.urandom(6).hex()
    try:
        verified = mount_plan.verify(mount_plan.plan(w, "job-1"))
        handle = mount_plan.start(verified, image, ["sh", "-c", "touch made-here; exit 5"],
                                  runtime="podman", socket=url, userns="keep-id",
                                  labels={TEST_LABEL: label})
        assert handle.wait(timeout=120) == 5 and handle.poll() == 5
        assert os.stat(w / "job-1" / "made-here").st_uid == uid
        handle = mount_plan.start(verified, image, ["sleep", "300"], runtime="podman",
                                  socket=url, userns="keep-id", stop_grace=1,
                                  labels={TEST_LABEL: label})
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.5)
        assert wait_for(lambda: handle.command_ran, 120)
        threading.Thread(target=handle.terminate).start()
        with pytest.raises(mount_plan.LaunchError) as e:
            handle.wait(timeout=120)
        assert e.value.rule == "cancelled"
        assert podman_left(url, f"{TEST_LABEL}={label}") == []
    finally:
        shutil.rmtree(w, ignore_errors=True)


INTERRUPTED = textwrap.dedent("""
    import sys, mount_plan
    ws, image, label, runtime, socket, userns = sys.argv[1:7]
    verified = mount_plan.verify(mount_plan.plan(ws, "job-1"))
    handle = mount_plan.start(verified, image, ["sleep", "120"], runtime=runtime,
                              socket=socket or None, userns=userns or None,
                              accept_missing=["noexec"] if runtime == "docker" else [],
                              labels={label.split("=")[0]: label.split("=")[1]}, stop_grace=1,
                              on_event=lambda e: print(e["event"], e.get("container", ""),
                                                       flush=True))
    try:
        handle.wait()
    except KeyboardInterrupt:
        print("interrupted", handle.done, flush=True)
        sys.exit(42)
    print("not interrupted", flush=True)
""")


def interrupt_wait(ws, image, label, runtime="docker", socket="", userns=""):
    """SIGINT a child Python waiting on a handle once its container runs; (exit status,
    container id, what it printed last)."""
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(ws), image, label, runtime,
                              socket, userns], stdout=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    container, last = None, None
    for line in child.stdout:
        if line.startswith("created"):
            container = line.split()[1]
        if line.startswith("started"):
            time.sleep(0.5)
            child.send_signal(signal.SIGINT)
        if line.startswith(("interrupted", "not interrupted")):
            last = line.strip()
            break
    return child.wait(timeout=60), container, last


def test_keyboard_interrupt_in_wait_docker(docker_client, probe_image, workspace, test_id):
    code, container, last = interrupt_wait(workspace, probe_image, f"{TEST_LABEL}={test_id}")
    # The interrupt was raised after the launch ended: done is True when it is caught.
    assert code == 42 and last == "interrupted True", last
    assert container and containers_of(docker_client, test_id) == []


def test_keyboard_interrupt_in_wait_rootless_podman(rootless_podman):
    url, uid, gid, image = rootless_podman
    w = make_workspace(owner=(uid, gid))
    label = f"{TEST_LABEL}={os.urandom(6).hex()}"
    try:
        code, container, last = interrupt_wait(w, image, label, "podman", url)
        assert code == 42 and last == "interrupted True", last
        assert container and podman_left(url, label) == []
    finally:
        shutil.rmtree(w, ignore_errors=True)


def test_many_threads_at_the_end_of_a_failed_launch_never_deadlock():
    """Waiters and pollers all reading a failed launch's answer at once: the LaunchError is made
    after the handle's lock is released. Made under it, its normalisation released the GIL and
    a thread holding the GIL then waited for the lock (a CI run hung in
    test_terminate_from_other_threads_docker; this script deadlocked 3 runs of 3 before the fix).
    In a child process, so that a deadlock fails the test instead of hanging the suite."""
    script = textwrap.dedent("""
        import sys, threading
        import mount_plan
        verified = mount_plan.verify(mount_plan.plan(sys.argv[1], "job"))
        for _ in range(50):
            # No engine answers there: the launch fails at connect, its command never ran.
            handle = mount_plan.start(verified, "busybox", ["true"],
                                      socket=sys.argv[1] + "/no-engine.sock",
                                      accept_missing=["noexec"])
            rules = []
            def waiter():
                try:
                    handle.wait()
                except mount_plan.LaunchError as e:
                    rules.append(e.rule)
            def poller():
                while True:
                    try:
                        if handle.poll() is not None:
                            return
                    except mount_plan.LaunchError as e:
                        rules.append(e.rule)
                        return
            threads = [threading.Thread(target=waiter) for _ in range(6)]
            threads += [threading.Thread(target=poller) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert rules == ["connect"] * 8, rules
            assert handle.command_ran is False
        print("ok")
    """)
    w = make_workspace(job="job")
    try:
        done = subprocess.run([sys.executable, "-c", script, str(w)], capture_output=True,
                              text=True, timeout=120)
    finally:
        shutil.rmtree(w)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
