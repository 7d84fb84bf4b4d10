"""mount_plan.nvflare: FLARE's Docker job launchers with mount-plan as the engine.

- Side by side with FLARE's own ClientDockerJobLauncher on the same job metadata and context:
  FLARE's with the Docker client mocked (as FLARE's unit tests do: the kwargs of
  ``containers.run``), mount-plan's on the real Docker engine (the container it created, read
  back with ``docker inspect`` before it starts). They differ only in what the contract adds.
- Settings that would weaken the contract are refused when the launcher is built.
- FLARE's handle (poll, wait, terminate) over a mount-plan launch.
"""

import os
import shutil
import uuid
from unittest import mock

import pytest

from conftest import TEST_LABEL, make_workspace

nvflare = pytest.importorskip("nvflare") if not os.environ.get("CI") else __import__("nvflare")
from nvflare.apis.fl_constant import FLContextKey  # noqa: E402
from nvflare.apis.job_launcher_spec import JobProcessArgs, JobReturnCode  # noqa: E402
from nvflare.app_opt.job_launcher import docker_launcher as flare  # noqa: E402

from mount_plan import nvflare as mp  # noqa: E402

ROOT = flare.DockerJobLauncher.WORKSPACE_MOUNT


def fl_ctx(site, job_id):
    ctx = mock.MagicMock()
    props = {
        FLContextKey.JOB_PROCESS_ARGS: {
            JobProcessArgs.EXE_MODULE: ("-m", "nvflare.private.fed.app.client.worker_process"),
            JobProcessArgs.WORKSPACE: ("-m", ROOT),
            JobProcessArgs.STARTUP_DIR: ("-w", f"{ROOT}/startup"),
            JobProcessArgs.JOB_ID: ("-n", job_id),
            JobProcessArgs.CLIENT_NAME: ("--client_name", site),
            JobProcessArgs.PARENT_URL: ("-p", "tcp://localhost:41234"),
            JobProcessArgs.AUTH_TOKEN: ("-t", "token-1"),
        },
        FLContextKey.ARGS: None,
        FLContextKey.WORKSPACE_OBJECT: None,
    }
    ctx.get_prop.side_effect = lambda key, default=None: props.get(key, default)
    ctx.get_identity_name.return_value = site
    return ctx


def job_meta(job_id, image):
    return {"job_id": job_id, "launcher_spec": {"default": {"docker": {"image": image}}}}


def flare_run_kwargs(workspace, network, job_id, image):
    """What FLARE's launcher asks docker-py for, with the Docker client mocked."""
    client = mock.MagicMock()
    container = mock.MagicMock(id="c1", status="running")
    client.containers.run.return_value = container
    client.containers.get.return_value = container
    with mock.patch.object(flare.docker, "from_env", return_value=client):
        launcher = flare.ClientDockerJobLauncher(workspace=str(workspace), network=network,
                                                 default_python_path="/usr/bin/python3")
        launcher.launch_job(job_meta(job_id, image), fl_ctx("site-1", job_id))
    args, kwargs = client.containers.run.call_args
    return args[0], kwargs


@pytest.fixture
def network(docker_client):
    name = f"mp-py-test-{uuid.uuid4().hex[:8]}"
    net = docker_client.networks.create(name, labels={TEST_LABEL: "1"})
    yield name
    net.remove()


def test_side_by_side_with_flares_launcher(docker_client, probe_image, network, test_id):
    job_id = str(uuid.uuid4())
    w = make_workspace(job=job_id)
    try:
        image, want = flare_run_kwargs(w, network, job_id, probe_image)
        seen = {}

        def on_event(name, event):
            # Called from the lifecycle before it goes on: the container exists, not started.
            if event["event"] == "created":
                seen["inspect"] = docker_client.api.inspect_container(event["container"])

        launcher = mp.ClientJobLauncher(workspace=str(w), network=network,
                                        default_python_path="/usr/bin/python3",
                                        accept_missing=["noexec"],
                                        labels={TEST_LABEL: test_id}, on_event=on_event,
                                        stop_grace=1)
        handle = launcher.launch_job(job_meta(job_id, probe_image), fl_ctx("site-1", job_id))
        handle.wait()
        got = seen["inspect"]
        config, host = got["Config"], got["HostConfig"]

        # What FLARE asks for, the container has.
        assert config["Image"] == image == probe_image
        assert config["Cmd"] == want["command"]
        assert got["Name"] == "/" + want["name"]
        assert config["WorkingDir"] == want["working_dir"] == f"{ROOT}/{job_id}"
        assert config["User"] == want["user"]
        assert host["NetworkMode"] == want["network"] == network
        env = dict(e.split("=", 1) for e in config["Env"])
        for k, v in want["environment"].items():
            assert env[k] == v, k
        assert env["NVFLARE_JOB_AUTH_TOKEN"] == "token-1"
        flare_mounts = {m["Target"]: m for m in want["mounts"]}
        ours = {m["Target"]: m for m in host["Mounts"]}
        # The contract adds one mount: the in-container gate, bound read-only from its
        # checked host copy, outside the workspace view.
        gate = ours.pop("/.mount-plan/gate")
        assert gate["Type"] == "bind" and gate["ReadOnly"], gate
        assert os.path.basename(gate["Source"]).startswith("gate-"), gate
        assert set(ours) == set(flare_mounts)
        for target, m in flare_mounts.items():
            o = ours[target]
            assert o["Type"] == m["Type"], target
            assert bool(o.get("ReadOnly")) == bool(m["ReadOnly"]), target
            if m["Type"] == "bind":
                assert o["Source"] == m["Source"], target
            else:
                assert o["TmpfsOptions"]["Mode"] == m["TmpfsOptions"]["Mode"] == 0o1777
        # What the contract adds, and only that.
        added = {}
        for target, o in ours.items():
            m = flare_mounts[target]
            extra = {k: v for k, v in o.items() if k not in m or (k in ("BindOptions",
                     "TmpfsOptions") and v != m.get(k))}
            if extra:
                added[target] = extra
        for target, extra in added.items():
            if flare_mounts[target]["Type"] == "bind":
                assert extra["BindOptions"]["Propagation"] == "rprivate" or \
                    extra["BindOptions"].get("NonRecursive"), (target, extra)
            else:
                assert extra["TmpfsOptions"]["SizeBytes"] > 0
        assert host["CapDrop"] and [c.upper().removeprefix("CAP_") for c in host["CapDrop"]] \
            == ["ALL"]
        assert "no-new-privileges" in ",".join(host["SecurityOpt"] or [])
        labels = config["Labels"]
        assert any(k.startswith("io.mount-plan.") for k in labels)
        assert labels[TEST_LABEL] == test_id
        # FLARE's options nobody asked for are not there.
        assert not host.get("Privileged") and not host.get("CapAdd")
        assert handle.poll() in (JobReturnCode.EXECUTION_ERROR, JobReturnCode.SUCCESS)
        assert docker_client.containers.list(all=True, sparse=True,
                                             filters={"label": f"{TEST_LABEL}={test_id}"}) == []
    finally:
        shutil.rmtree(w, ignore_errors=True)


def test_flares_handle_poll_wait_terminate(docker_client, probe_image, network, test_id):
    job_id = str(uuid.uuid4())
    w = make_workspace(job=job_id)
    try:
        # The probe image has no Python: with python_path /bin/sleep, FLARE's command
        # ("sleep -u -m MODULE ...") fails at once, and FLARE's handle reports it.
        launcher = mp.ClientJobLauncher(workspace=str(w), network=network,
                                        default_python_path="/bin/sleep",
                                        accept_missing=["noexec"],
                                        labels={TEST_LABEL: test_id}, stop_grace=1)
        handle = launcher.launch_job(job_meta(job_id, probe_image), fl_ctx("site-1", job_id))
        handle.wait()
        assert handle.poll() == JobReturnCode.EXECUTION_ERROR
        # A job that runs, terminated through FLARE's handle: ABORTED, its container gone.
        engine = launcher.engine
        container = engine.run(probe_image, ["/bin/sleep", "300"],
                               **_flare_like_kwargs(w, job_id, network))
        handle = flare.DockerJobHandle(container.id, container.name, engine,
                                       container=container)
        assert handle.enter_states([flare.DockerStatus.RUNNING])
        assert handle.poll() == JobReturnCode.UNKNOWN
        handle.terminate()
        assert handle.poll() == JobReturnCode.ABORTED
        assert docker_client.containers.list(all=True, sparse=True,
                                             filters={"label": f"{TEST_LABEL}={test_id}"}) == []
    finally:
        shutil.rmtree(w, ignore_errors=True)


def _flare_like_kwargs(w, job_id, network):
    from docker.types import Mount
    return dict(
        name=f"site-1-{job_id}", network=network, detach=True, auto_remove=True,
        environment={"USER": "nvflare"}, working_dir=f"{ROOT}/{job_id}", user="0:0",
        mounts=[Mount(target=ROOT, source=None, type="tmpfs", tmpfs_mode=0o1777),
                Mount(target=f"{ROOT}/startup", source=f"{w}/startup", type="bind",
                      read_only=True),
                Mount(target=f"{ROOT}/local", source=f"{w}/local", type="bind", read_only=True),
                Mount(target=f"{ROOT}/{job_id}", source=f"{w}/{job_id}", type="bind")])


def test_weakening_settings_are_refused_at_construction(tmp_path):
    for kwargs, rule, value in [
        ({"default_job_container_kwargs": {"privileged": True}}, "nvflare-weakens",
         "privileged=True"),
        ({"default_job_container_kwargs": {"volumes": {"/": {"bind": "/host"}}}},
         "nvflare-weakens", None),
        ({"default_job_container_kwargs": {"cap_add": ["SYS_ADMIN"]}}, "nvflare-weakens", None),
        ({"default_job_container_kwargs": {"ipc_mode": "host"}}, "nvflare-weakens", None),
        ({"default_job_container_kwargs": {"shm_size": "8g"}}, "nvflare-unsupported",
         "shm_size"),
        ({"network": "host"}, "nvflare-weakens", "network=host"),
        ({"runtime": "lxc"}, "nvflare-runtime", "lxc"),
    ]:
        with pytest.raises(mp.NvflareConfigError) as e:
            mp.ServerJobLauncher(workspace=str(tmp_path), **kwargs)
        assert e.value.rule == rule, kwargs
        if value:
            assert e.value.value == value
        assert rule in str(e.value)
    # FLARE's own checks still apply (reserved keys).
    with pytest.raises(ValueError):
        mp.ClientJobLauncher(workspace=str(tmp_path),
                             default_job_container_kwargs={"labels": {}, "image": "x"})
    # What translates is accepted.
    launcher = mp.ClientJobLauncher(workspace=str(tmp_path), runtime="podman",
                                    default_job_container_kwargs={
                                        "mem_limit": "1g", "nano_cpus": 1_500_000_000,
                                        "pids_limit": 100})
    assert launcher.runtime == "podman"


def test_a_mount_the_contract_cannot_express_fails_the_launch(tmp_path):
    launcher = mp.ClientJobLauncher(workspace=str(tmp_path))
    kwargs = _flare_like_kwargs(tmp_path, "j1", "none")
    kwargs["mounts"] = kwargs["mounts"][:2] + kwargs["mounts"][3:]  # local/ not bound
    with pytest.raises(RuntimeError, match="nvflare-layout"):
        launcher.engine.translate("img", ["x"], **kwargs)
    kwargs = _flare_like_kwargs(tmp_path, "j1", "none")
    kwargs["privileged"] = True
    with pytest.raises(RuntimeError, match="nvflare-weakens"):
        launcher.engine.translate("img", ["x"], **kwargs)
    # Study data: another bind becomes a layout extra mount (checked and pinned by verify).
    from docker.types import Mount
    kwargs = _flare_like_kwargs(tmp_path, "j1", "none")
    kwargs["mounts"].append(Mount(target="/data/s1/d1", source="/srv/data/d1", type="bind",
                                  read_only=True))
    layout, workspace, job, image, start = launcher.engine.translate("img", ["x"], **kwargs)
    assert layout["extra_mounts"] == [{"source": "/srv/data/d1", "target": "/data/s1/d1",
                                       "read_only": True}]
    assert (workspace, job, layout["root"]) == (str(tmp_path), "j1", "scratch")
