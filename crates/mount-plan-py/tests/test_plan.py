"""Plans through Python equal the CLI's: to_dict() is `plan --format json`, the renderers are
`--format docker-args|podman-args|oci`, for random layouts, workspaces and job names; refusals
carry the same rule and message."""

import json
import random
import subprocess

import pytest

import mount_plan

# (valid, invalid) values: a case draws an invalid one a quarter of the time.
ROOTS = (["/workspace", "/var/tmp/nvflare/workspace", "/w", "/opt/job space", "/a,b=c"],
         ["relative", "/proc/x", "/", "/w/../x", "/w/"])
SHARED = (["startup", "local", "data", "Models.v2", "x"], ["a,b", "Data", "..", ""])
WORKSPACES = (["/srv/site", "/srv/a,b \"c\"=d", "/var/tmp/ws", "/srv/\u00e9t\u00e9"],
              ["/srv/site/", "srv", "/", "/srv/x\ny"])
JOBS = (["job-1", "train-2026.11", "DATA", "x" * 128, "j"],
        ["Startup", "local", "a,b", "x" * 129])
EXTRA_SOURCES = (["/datasets/mnist", "/data/b", "/mnt/c"], ["/srv/site/inner", "/srv", "rel"])
EXTRA_TARGETS = (["/data/mnist", "/data/b", "/mnt/c", "/data"], ["/workspace/x", "/sys/x"])


def pick(rng, values):
    valid, invalid = values
    return rng.choice(invalid if rng.random() < 0.25 else valid)

def cli_plan(cli, args, fmt="json"):
    out = subprocess.run([cli, "plan", "--format", fmt, *args], capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def random_case(rng):
    """(python kwargs, CLI args, TOML layout file text or None) of one random case."""
    kw, args, toml = {}, [], []
    if rng.random() < 0.7:
        root = pick(rng, ROOTS)
        kw["container_root"] = root
        args += ["--container-root", root]
    r = rng.random()
    if r < 0.2:
        kw["no_shared"] = True
        args.append("--no-shared")
    elif r < 0.6:
        shared = [pick(rng, SHARED) for _ in range(rng.randint(1, 3))]
        kw["shared"] = shared
        for s in shared:
            args += ["--shared", s]
    if rng.random() < 0.4:
        kw["root"] = "scratch"
        args += ["--root", "scratch"]
    elif rng.random() < 0.2:
        kw["root"] = "read-only"
        args += ["--root", "read-only"]
    if rng.random() < 0.5:
        size = rng.choice([1024, 4096, 1 << 20, 64 << 20])
        kw["scratch_size"] = size
        args += ["--scratch-size", str(size)]
    extras = []
    if rng.random() < 0.4:
        for _ in range(rng.randint(1, 2)):
            extras.append((pick(rng, EXTRA_SOURCES), pick(rng, EXTRA_TARGETS),
                           rng.random() < 0.7))
        for src, dst, ro in extras:
            toml.append(f"[[extra_mounts]]\nsource = {json.dumps(src)}\n"
                        f"target = {json.dumps(dst)}\nread_only = {str(ro).lower()}\n")
    return kw, args, extras, "\n".join(toml) if toml else None


def python_plan(workspace, job, kw):
    try:
        return mount_plan.plan(workspace, job, **kw), None
    except mount_plan.PlanError as e:
        return None, e


def test_random_layouts_match_cli(cli, tmp_path):
    rng = random.Random(20261202)
    built = refused = 0
    for i in range(200):
        kw, args, extras, toml = random_case(rng)
        workspace, job = pick(rng, WORKSPACES), pick(rng, JOBS)
        if toml is not None:
            f = tmp_path / f"layout-{i}.toml"
            f.write_text(toml)
            args += ["--layout", str(f)]
            # Half through the file, half as keyword arguments.
            if rng.random() < 0.5:
                kw["layout"] = str(f)
            else:
                kw["extra_mounts"] = extras
        code, out, err = cli_plan(cli, ["--workspace", workspace, "--job", job, *args])
        plan, error = python_plan(workspace, job, kw)
        case = (i, workspace, job, kw, args)
        if code == 0:
            assert error is None, (case, str(error))
            assert plan.to_dict() == json.loads(out), case
            built += 1
        else:
            assert code == 2, (case, err)
            assert error is not None, (case, err)
            # The CLI prints the error with its causes (anyhow's `{:#}`) after it.
            assert err.strip().startswith(f"error: {error}"), case
            assert f"rule `{error.rule}`" in err, case
            refused += 1
    # The generator reaches both outcomes often.
    assert built > 20 and refused > 20, (built, refused)


@pytest.mark.parametrize("fmt,method", [("docker-args", "docker_args"),
                                        ("podman-args", "podman_args"), ("oci", "oci_mounts")])
def test_renderers_match_cli(cli, fmt, method):
    for workspace, extra in [("/srv/site", []), ("/srv/a,b \"c\"=d", ["--shared", "x"]),
                             ("/srv/site", ["--root", "scratch", "--scratch-size", "65536"])]:
        code, out, err = cli_plan(cli, ["--workspace", workspace, "--job", "job-1", *extra], fmt)
        assert code == 0, err
        kw = {}
        if "--shared" in extra:
            kw["shared"] = ["x"]
        if "--root" in extra:
            kw.update(root="scratch", scratch_size=65536)
        plan = mount_plan.plan(workspace, "job-1", **kw)
        assert getattr(plan, method)() == json.loads(out)


def test_done_when_workdir():
    assert mount_plan.plan("/srv/site", "job-1").workdir == "/workspace/job-1"


def test_typed_mounts():
    plan = mount_plan.plan("/srv/site", "job-1", shared=["startup"], extra_mounts=[
        {"source": "/datasets/mnist", "target": "/data/mnist"}])
    root, startup, job, extra = plan.mounts
    assert isinstance(root, mount_plan.TmpfsMount)
    assert (root.kind, root.target, root.read_only, root.mode, root.size_bytes) == \
        ("tmpfs", "/workspace", True, 0o555, 1 << 20)
    assert (root.nosuid, root.nodev, root.noexec) == (True, True, True)
    assert isinstance(startup, mount_plan.BindMount)
    assert (startup.role, startup.source, startup.target, startup.read_only) == \
        ("shared", "/srv/site/startup", "/workspace/startup", True)
    assert (job.role, job.source, job.target, job.read_only, job.noexec) == \
        ("job", "/srv/site/job-1", "/workspace/job-1", False, False)
    assert (job.recursive, job.propagation) == (False, "private")
    assert (extra.role, extra.read_only) == ("extra", True)
    assert [m.target for m in plan.mounts] == [m["target"] for m in plan.to_dict()["mounts"]]
    assert plan.mounts[0] == root and "TmpfsMount(" in repr(root)


def test_docker_mounts_are_engine_api_mounts():
    mounts = mount_plan.plan("/srv/site", "job-1").docker_mounts()
    assert mounts[0] == {"Target": "/workspace", "Type": "tmpfs", "ReadOnly": True,
                         "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o555}}
    assert mounts[3] == {"Target": "/workspace/job-1", "Source": "/srv/site/job-1",
                         "Type": "bind", "ReadOnly": False,
                         "BindOptions": {"Propagation": "private", "NonRecursive": True}}
    assert [m["ReadOnly"] for m in mounts] == [True, True, True, False]


def test_layout_object_and_file(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('container_root = "/var/tmp/nvflare/workspace"\nshared = ["startup"]\n'
                 'root = "scratch"\nroot_size_bytes = 65536\nrequire = ["noexec"]\n\n'
                 '[[extra_mounts]]\n'
                 'source = "/datasets/mnist"\ntarget = "/data/mnist"\n')
    layout = mount_plan.Layout.from_file(f)
    assert layout == mount_plan.Layout(layout=f)
    assert (layout.container_root, layout.shared, layout.root, layout.root_size_bytes) == \
        ("/var/tmp/nvflare/workspace", ["startup"], "scratch", 65536)
    assert layout.extra_mounts == [{"source": "/datasets/mnist", "target": "/data/mnist",
                                    "read_only": True}]
    # Keyword arguments override the file, as CLI flags do.
    assert mount_plan.Layout(layout=f, shared=["a", "b"]).shared == ["a", "b"]
    assert mount_plan.Layout(layout=str(f), no_shared=True).shared == []
    p = mount_plan.plan("/srv/site", "job-1", layout=layout)
    assert p.workdir == "/var/tmp/nvflare/workspace/job-1"
    assert p == layout.plan("/srv/site", "job-1") == mount_plan.plan("/srv/site", "job-1",
                                                                      layout=f)
    exported = mount_plan.Layout.from_file(f).to_dict()
    assert (exported["root"], exported["require"]) == ("scratch", ["noexec"])
    assert mount_plan.Layout().to_dict()["require"] == []
    with pytest.raises(mount_plan.PlanError) as e:
        layout.job("STARTUP")
    assert e.value.rule == "reserved"


def test_layout_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("containr_root = 1\n")
    with pytest.raises(mount_plan.PlanError) as e:
        mount_plan.Layout.from_file(bad)
    assert e.value.rule == "layout-file" and e.value.value == str(bad)
    with pytest.raises(FileNotFoundError):
        mount_plan.Layout.from_file(tmp_path / "missing.toml")
    with pytest.raises(mount_plan.PlanError) as e:
        mount_plan.Layout(root="scratch")
    assert e.value.rule == "scratch-size" and e.value.value is None
    with pytest.raises(mount_plan.PlanError) as e:
        mount_plan.Layout(shared=["startup", "Startup"])
    assert (e.value.rule, e.value.value) == ("shared-duplicate", "Startup")
    with pytest.raises(mount_plan.PlanError) as e:
        mount_plan.plan("srv", "job-1")
    assert (e.value.rule, e.value.value) == ("not-absolute", "srv")
    with pytest.raises(ValueError):
        mount_plan.Layout(root="sideways")
    with pytest.raises(ValueError):
        mount_plan.Layout(no_shared=True, shared=["a"])
    with pytest.raises(TypeError):
        mount_plan.plan("/srv/site", "job-1", layout=mount_plan.Layout(), shared=["a"])
