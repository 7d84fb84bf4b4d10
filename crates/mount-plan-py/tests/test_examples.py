"""The launchers of examples/python run as their README says, on the real Docker engine; the
hand-written guard lets through what mount-plan refuses."""

import sys

import pytest

import mount_plan
from conftest import REPO

sys.path.insert(0, str(REPO / "examples" / "python"))
import mount_plan_launcher  # noqa: E402
import reference_launcher  # noqa: E402


def test_reference_guard_lets_through_what_mount_plan_refuses(workspace):
    for name, rule in [("job1,readonly=false", "bad-char"), ("Startup", "reserved"),
                       ("a:b", "bad-char"), ("j\u043eb", "bad-char"), ("x" * 200, "too-long")]:
        reference_launcher.check_job_name(str(workspace), name)  # accepted
        with pytest.raises(mount_plan.PlanError) as e:
            mount_plan.check_name(name)
        assert e.value.rule == rule
    for name in ["", "..", "a/b", "/abs", "startup"]:
        with pytest.raises(ValueError):
            reference_launcher.check_job_name(str(workspace), name)
        with pytest.raises(mount_plan.PlanError):
            mount_plan.check_name(name)


def test_both_launchers_run(docker_client, probe_image, workspace, capfd):
    cmd = ["sh", "-c", "pwd; echo ok > out.txt"]
    assert reference_launcher.launch(docker_client, probe_image, cmd, str(workspace),
                                     "job-1") == 0
    assert (workspace / "job-1" / "out.txt").read_text() == "ok\n"
    (workspace / "job-1" / "out.txt").unlink()
    assert mount_plan_launcher.launch_with_docker_py(docker_client, probe_image, cmd,
                                                     str(workspace), "job-1") == 0
    assert (workspace / "job-1" / "out.txt").read_text() == "ok\n"
    assert mount_plan_launcher.launch_with_mount_plan(probe_image, cmd, str(workspace),
                                                      "job-2") == 0
    assert (workspace / "job-2" / "out.txt").read_text() == "ok\n"
    out = capfd.readouterr().out.split()
    assert out == ["/var/tmp/nvflare/workspace/job-1"] * 2 + ["/var/tmp/nvflare/workspace/job-2"]
