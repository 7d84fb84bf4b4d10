"""docker-py with the plan's mounts against the real Docker engine: the contract seen from
inside the container by the static probe. This is how a launcher that keeps docker-py uses
mount-plan: `containers.run(..., mounts=plan.docker_mounts(), working_dir=plan.workdir)`."""

import errno
import json
import os

import mount_plan
from conftest import TEST_LABEL


def run_probe(client, image, plan, test_id, *probe_args):
    out = client.containers.run(
        image, ["/probe", "report", "--root", plan.container_root, *probe_args],
        mounts=plan.docker_mounts(), working_dir=plan.workdir,
        security_opt=["no-new-privileges"], network_mode="none",
        labels={TEST_LABEL: test_id}, remove=True, stdout=True, stderr=False)
    return json.loads(out)


def test_contract_from_inside(docker_client, probe_image, workspace, test_id):
    (workspace / "job-2").mkdir()  # a sibling job: never visible
    (workspace / "job-2" / "secret").write_text("other job\n")
    plan = mount_plan.verify(mount_plan.plan(str(workspace), "job-1")).plan
    r = run_probe(docker_client, probe_image, plan, test_id,
                  "--try-write", "/workspace/planted",
                  "--try-mkdir", "/workspace/job-2",
                  "--try-write", "/workspace/startup/planted",
                  "--try-write", "/workspace/local/planted",
                  "--write-file", "/workspace/job-1/out.txt",
                  "--stat", "/workspace/job-1", "--stat", "/workspace/startup/site.cfg")

    # The working directory is R/J, and R holds exactly the planned entries.
    assert r["cwd"]["path"] == "/workspace/job-1"
    assert r["root_entries"]["names"] == ["job-1", "local", "startup"]
    # R and the shared directories refuse writes; the job directory takes them.
    by_path = {w["path"]: w for w in r["writes"] + r["mkdirs"] + r["files"]}
    for p in ["/workspace/planted", "/workspace/job-2", "/workspace/startup/planted",
              "/workspace/local/planted"]:
        assert not by_path[p]["ok"], p
        assert by_path[p]["errno"] == errno.EROFS, by_path[p]
    assert by_path["/workspace/job-1/out.txt"]["ok"]
    assert (workspace / "job-1" / "out.txt").read_text() == "probe output\n"
    assert not (workspace / "startup" / "planted").exists()
    # The job directory inside is the very inode that was pinned on the host.
    job_stat = next(s for s in r["stats"] if s["path"] == "/workspace/job-1")
    assert job_stat["ino"] == os.stat(workspace / "job-1").st_ino
    assert next(s for s in r["stats"] if s["path"] == "/workspace/startup/site.cfg")["exists"]

    mounts = {m["mount_point"]: m for m in r["mountinfo"]}
    root = mounts["/workspace"]
    assert root["fs_type"] == "tmpfs" and "ro" in root["mount_options"].split(",")
    assert "size=1024k" in root["super_options"]
    for name in ["startup", "local"]:
        m = mounts[f"/workspace/{name}"]
        assert "ro" in m["mount_options"].split(","), m
        assert m["root"].endswith(f"/{name}"), m
        assert not any(o.startswith("shared:") for o in m["optional"]), m
    job = mounts["/workspace/job-1"]
    assert "rw" in job["mount_options"].split(",")
    assert job["root"].endswith("/job-1")
    # Nothing else of W is mounted: no sibling job, no workspace root.
    ws_mounts = [m for m in r["mountinfo"] if m["mount_point"].startswith("/workspace")]
    assert sorted(m["mount_point"] for m in ws_mounts) == [
        "/workspace", "/workspace/job-1", "/workspace/local", "/workspace/startup"]
    assert not any(m["root"].endswith("/job-2") for m in r["mountinfo"])
    # The container is gone (remove=True), and none of this test's containers is left.
    assert docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={test_id}"}) == []


def test_hostile_workspace_path_passes_intact(docker_client, probe_image, tmp_path, test_id):
    """A workspace path with `,` `"` `=` and spaces: typed mounts carry it unchanged."""
    from conftest import make_workspace
    base = tmp_path / 'site a,b "c"=d'
    base.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(base, 0o755)
    w = make_workspace(base=str(base))
    plan = mount_plan.verify(mount_plan.plan(str(w), "job-1")).plan
    r = run_probe(docker_client, probe_image, plan, test_id,
                  "--write-file", "/workspace/job-1/ok")
    assert r["files"][0]["ok"]
    assert (w / "job-1" / "ok").is_file()
