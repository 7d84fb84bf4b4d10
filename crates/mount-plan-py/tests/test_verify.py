"""verify(): the host checks of mount-plan-host with the CLI's options; pins; HostCheckError."""

import json
import os
import subprocess

import pytest

import mount_plan


def test_verify_pins_match_the_filesystem(workspace):
    plan = mount_plan.plan(str(workspace), "job-1")
    verified = mount_plan.verify(plan)
    st = os.stat(workspace / "job-1")
    assert verified.job_pin == (st.st_dev, st.st_ino)
    ws = os.stat(workspace)
    assert verified.workspace_pin == (ws.st_dev, ws.st_ino)
    assert verified.plan == plan and verified.workdir == "/workspace/job-1"
    assert not verified.job_dir_created
    pins = verified.pins
    assert [b["target"] for b in pins["binds"]] == [
        "/workspace/startup", "/workspace/local", "/workspace/job-1"]
    assert pins["binds"][2]["ino"] == st.st_ino and pins["binds"][2]["role"] == "job"
    assert verified.launcher_workspace == str(workspace)


def test_verify_to_dict_matches_cli(cli, workspace):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-1"))
    out = subprocess.run([cli, "plan", "--workspace", str(workspace), "--job", "job-1",
                          "--verify"], capture_output=True, text=True, check=True).stdout
    assert verified.to_dict() == json.loads(out)


def test_create_job_dir(workspace):
    verified = mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir="fresh",
                                 job_dir_mode=0o700)
    assert verified.job_dir_created
    st = os.stat(workspace / "job-2")
    assert st.st_mode & 0o7777 == 0o700
    assert verified.job_pin[1] == st.st_ino
    with pytest.raises(mount_plan.HostCheckError) as e:
        mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir="fresh")
    assert e.value.rule == "exists"
    assert e.value.path == str(workspace / "job-2") == e.value.value
    assert e.value.what == "job directory"
    # True is `--create-job-dir` without a value: if missing.
    again = mount_plan.verify(mount_plan.plan(workspace, "job-2"), create_job_dir=True)
    assert not again.job_dir_created


def test_symlinked_job_dir_is_refused(workspace, tmp_path):
    (workspace / "evil").symlink_to(tmp_path)
    with pytest.raises(mount_plan.HostCheckError) as e:
        mount_plan.verify(mount_plan.plan(workspace, "evil"))
    assert e.value.rule == "symlink"
    assert "`symlink`" in str(e.value)
    assert e.value.launcher_path == str(workspace / "evil")


def test_missing_and_permissions(workspace):
    with pytest.raises(mount_plan.HostCheckError) as e:
        mount_plan.verify(mount_plan.plan(workspace, "nope"))
    assert e.value.rule == "missing"
    os.chmod(workspace, 0o777)
    try:
        with pytest.raises(mount_plan.HostCheckError) as e:
            mount_plan.verify(mount_plan.plan(workspace, "job-1"))
        assert e.value.rule == "permissions" and e.value.what == "workspace"
        warned = mount_plan.verify(mount_plan.plan(workspace, "job-1"), permissions="warn")
        assert any("permissions" in w for w in warned.warnings)
    finally:
        os.chmod(workspace, 0o755)


def test_launcher_workspace_view(workspace):
    plan = mount_plan.plan("/srv/engine-view", "job-1")
    verified = mount_plan.verify(plan, launcher_workspace=workspace)
    assert verified.plan.workspace == "/srv/engine-view"
    assert verified.launcher_workspace == str(workspace)
    assert verified.job_pin[1] == os.stat(workspace / "job-1").st_ino


def test_bad_options():
    plan = mount_plan.plan("/srv/site", "job-1")
    with pytest.raises(ValueError):
        mount_plan.verify(plan, create_job_dir="sometimes")
    with pytest.raises(ValueError):
        mount_plan.verify(plan, permissions="ignore")
    with pytest.raises(mount_plan.HostCheckError) as e:
        mount_plan.verify(plan, create_job_dir="fresh", job_dir_mode=0o17777)
    assert e.value.rule == "mode"
