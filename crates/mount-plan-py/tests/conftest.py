"""Fixtures of the Python suite: the CLI to compare with, engines, the offline probe image.

Engine tests need a running engine. Without one they are skipped on a laptop and FAIL when the
environment variable CI is set (as .ci/run sets it), so a CI run can never pass by skipping.
"""

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PODMAN_ENV = Path("/tmp/mount-plan-podman/env")
# The offline test image: Debian's static busybox and the static probe, imported, never pulled.
PROBE_IMAGE = "mount-plan-probe:py-test"
CONTENT_LABEL = "mount-plan-test.content"
BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "echo", "cat", "ls", "sleep", "mkdir", "touch", "id", "true", "false", "rm",
           "stat", "test", "env", "pwd", "dd"]
# Every container a test creates carries this label, so checks never look at other agents'.
TEST_LABEL = "mount-plan-py-test"


def require(ok, why):
    """Skip when `ok` is false; fail instead under CI."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {why}")
    pytest.skip(why)


def default_sigint():
    """For a child Python that must see SIGINT as a KeyboardInterrupt: a shell runs background
    commands with SIGINT ignored, and Python keeps an ignored SIGINT ignored."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


@pytest.fixture(scope="session")
def cli():
    """The `mount-plan` CLI of this checkout (MOUNT_PLAN_CLI, or built with cargo)."""
    given = os.environ.get("MOUNT_PLAN_CLI")
    if given:
        return given
    out = run(["cargo", "build", "--locked", "-q", "-p", "mount-plan-cli",
               "--message-format=json"], cwd=REPO, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "mount-plan":
            return msg["executable"]
    raise RuntimeError("cargo built no mount-plan binary")


def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


@pytest.fixture(scope="session")
def probe_binary():
    """The static probe (MOUNT_PLAN_PROBE, or built as the Rust engine tests build it)."""
    given = os.environ.get("MOUNT_PLAN_PROBE")
    if given:
        return Path(given)
    target = REPO / "target" / "probe"
    with _locked(target / ".build.lock"):
        env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
        env.pop("CARGO_TARGET_DIR", None)
        run(["cargo", "build", "--quiet", "--locked", "-p", "mount-plan-probe", "--release",
             "--target", "x86_64-unknown-linux-gnu", "--target-dir", str(target)],
            cwd=REPO, env=env)
    return target / "x86_64-unknown-linux-gnu" / "release" / "mount-plan-probe"


def _image_tar(probe):
    """The image's root filesystem as a tar, fixed owners and times (same input, same digest)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, data=None, mode=0o755, link=None, directory=False):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = mode, 0, 0, 0
            if directory:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("bin", directory=True)
        add("tmp", mode=0o1777, directory=True)
        add("bin/busybox", BUSYBOX.read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", link="busybox")
        add("probe", Path(probe).read_bytes())
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client of the running engine."""
    try:
        import docker
    except ImportError:
        require(False, "docker-py is not installed (pip install docker)")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means: no engine here
        require(False, f"the Docker engine does not answer: {e}")
    return client


@pytest.fixture(scope="session")
def probe_image(docker_client, probe_binary):
    """The offline busybox+probe image in Docker, imported once per content."""
    require(BUSYBOX.is_file(), f"{BUSYBOX} is missing (apt-get install busybox-static)")
    data, digest = _image_tar(probe_binary)
    with _locked(REPO / "target" / "probe" / ".py-image.lock"):
        try:
            current = docker_client.images.get(PROBE_IMAGE).labels.get(CONTENT_LABEL)
        except Exception:  # noqa: BLE001 - not there yet
            current = None
        if current != digest:
            with tempfile.NamedTemporaryFile(suffix=".tar") as f:
                f.write(data)
                f.flush()
                run(["docker", "import", "--change", f"LABEL {CONTENT_LABEL}={digest}",
                     f.name, PROBE_IMAGE])
    return PROBE_IMAGE


def podman_settings():
    """The settings .ci/podman-setup wrote (environment first, then its env file)."""
    settings = {}
    if PODMAN_ENV.is_file():
        for line in PODMAN_ENV.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                settings[k] = v
    for k in list(settings):
        settings[k] = os.environ.get(k, settings[k])
    return settings


@pytest.fixture(scope="session")
def rootless_podman():
    """(socket URL, uid, gid, image) of the rootless Podman service."""
    s = podman_settings()
    url = s.get("MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET")
    require(url, f"no rootless Podman service (run bash .ci/podman-setup; {PODMAN_ENV})")
    require(shutil.which("podman"), "podman is not installed")
    answer = None
    for attempt in range(5):  # a service that is (re)starting answers within seconds
        answer = subprocess.run(["podman", "--url", url, "version", "--format",
                                 "{{.Server.Version}}"], capture_output=True, text=True,
                                timeout=30)
        if answer.returncode == 0:
            break
        time.sleep(2)
    require(answer.returncode == 0, f"the rootless Podman service at {url} does not answer: "
                                    f"{answer.stderr.strip()}")
    uid = int(s["MOUNT_PLAN_PODMAN_ROOTLESS_UID"])
    import pwd
    gid = pwd.getpwuid(uid).pw_gid
    image = s.get("MOUNT_PLAN_PODMAN_IMAGE", "localhost/mount-plan-busybox:latest")
    return url, uid, gid, image


def make_workspace(base=None, job="job-1", shared=("startup", "local"), owner=None):
    """A site workspace W: 0755 directories, a file in startup/, W/J (owned by `owner`)."""
    w = Path(tempfile.mkdtemp(prefix="mp-py-", dir=base or "/tmp"))
    os.chmod(w, 0o755)
    for name in shared:
        (w / name).mkdir(mode=0o755)
        os.chmod(w / name, 0o755)
    if "startup" in shared:
        (w / "startup" / "site.cfg").write_text("site config\n")
    if job:
        (w / job).mkdir()
        if owner:
            os.chown(w / job, *owner)
            os.chmod(w / job, 0o700)
    return w


@pytest.fixture
def workspace():
    w = make_workspace()
    yield w
    shutil.rmtree(w, ignore_errors=True)


@pytest.fixture
def test_id():
    """A label value unique to this test: its containers are found by it, and only them."""
    return uuid.uuid4().hex[:12]
