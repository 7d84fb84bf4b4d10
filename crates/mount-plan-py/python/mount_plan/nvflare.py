"""NVIDIA FLARE's job launchers, with every job container launched by mount-plan.

``ServerJobLauncher`` and ``ClientJobLauncher`` are FLARE's own ``ServerDockerJobLauncher`` and
``ClientDockerJobLauncher`` (``nvflare.app_opt.job_launcher.docker_launcher``) with one thing
changed: the engine. FLARE builds the job exactly as it always does (command line, environment,
parent URL, user, GPUs, the workspace view, study-data mounts) and hands it to what it takes for
a docker-py client; here that client is ``_MountPlanEngine``, which turns the container FLARE
asks for into a mount-plan layout and launch:

- FLARE's workspace view (a tmpfs at ``/var/tmp/nvflare/workspace`` of mode 1777, ``startup``
  and ``local`` read-only, the job's directory read-write and the working directory) is the
  layout with that container root, those shared directories and a scratch root;
- every other bind FLARE adds (study datasets from ``local/study_data.yaml``, a shared-file
  parent directory, study secrets) is a layout extra mount, checked and pinned by identity;
- the plan is verified on the host (no link followed, every bind source pinned), the container
  is launched by ``mount_plan.start`` (capabilities dropped, the gate, the audit, removal), and
  FLARE's ``DockerJobHandle`` polls, waits and terminates it through that handle.

Any container FLARE would ask for that the contract cannot express is refused (RuntimeError
naming the rule and the value, FLARE reports the job as failed to launch); any site setting
that would weaken it is refused when the launcher is built (``NvflareConfigError``).

Requires ``nvflare`` and ``docker`` (docker-py, for FLARE's types; no docker-py client is
connected).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Dict, List, Literal, Optional, Sequence

# Neither ships type information.
import docker.errors  # type: ignore[import-untyped]
from nvflare.apis.fl_context import FLContext  # type: ignore[import-untyped]
from nvflare.apis.job_launcher_spec import JobHandleSpec  # type: ignore[import-untyped]
from nvflare.app_opt.job_launcher import docker_launcher as _flare  # type: ignore[import-untyped]

import mount_plan

__all__ = ["ClientJobLauncher", "NvflareConfigError", "ServerJobLauncher"]

#: What FLARE's launcher puts at the container's workspace root, in mount-plan terms.
WORKSPACE_MOUNT = _flare.DockerJobLauncher.WORKSPACE_MOUNT
#: The size of the scratch root tmpfs (FLARE's has none: the engine's default).
DEFAULT_SCRATCH_SIZE = 64 * 1024 * 1024

# Site-level docker-py keyword arguments and what they become in a mount-plan launch. Anything
# else is refused when the launcher is built: either it weakens the contract or mount-plan has
# no such option (FLARE's launcher would pass it to the engine as it is).
_TRANSLATED = {"mem_limit", "nano_cpus", "pids_limit", "device_requests", "labels"}
_WEAKENING = {
    "privileged", "cap_add", "cap_drop", "security_opt", "devices", "device_cgroup_rules",
    "volumes", "volumes_from", "mounts", "tmpfs", "network_mode", "pid_mode", "ipc_mode",
    "userns_mode", "uts_mode", "cgroupns", "sysctls", "read_only", "runtime", "storage_opt",
    "user", "working_dir", "entrypoint", "group_add", "cgroup_parent", "use_config_proxy",
}


class NvflareConfigError(ValueError):
    """A launcher setting mount-plan refuses: ``rule`` says why, ``value`` what."""

    def __init__(self, rule: str, value: str, message: str):
        super().__init__(f"{message} (rule {rule}, value {value!r})")
        self.rule = rule
        self.value = value


def _memory_bytes(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"([0-9]+)([bkmg]?)b?", str(value).strip().lower())
    if not match:
        raise NvflareConfigError("nvflare-memory", str(value), "mem_limit is bytes or N[b|k|m|g]")
    return int(match.group(1)) << {"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[match.group(2)]


def _gpus(device_requests: Any) -> Optional[str]:
    """docker-py's ``device_requests`` (FLARE sets ``[{"Count": n, "Capabilities": [["gpu"]]}]``)
    as mount-plan's ``gpus``."""
    if not device_requests:
        return None
    if not isinstance(device_requests, (list, tuple)) or len(device_requests) != 1:
        raise NvflareConfigError("nvflare-gpus", repr(device_requests),
                                 "device_requests must be one request of GPUs")
    request = dict(device_requests[0])
    ids = request.get("DeviceIDs") or request.get("device_ids")
    if ids:
        return "device=" + ",".join(str(i) for i in ids)
    count = request.get("Count", request.get("count", -1))
    return "all" if count == -1 else str(count)


def _translate_kwargs(kwargs: Dict[str, Any], where: str) -> Dict[str, Any]:
    """docker-py keyword arguments as mount_plan.start keyword arguments; NvflareConfigError
    for anything else."""
    out: Dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _WEAKENING:
            raise NvflareConfigError(
                "nvflare-weakens", f"{key}={value!r}",
                f"{where}: {key} would change the job's mounts, privileges, namespaces or "
                "identity, which mount-plan's contract decides; remove it")
        if key not in _TRANSLATED:
            raise NvflareConfigError(
                "nvflare-unsupported", key,
                f"{where}: mount-plan's launch has no option for {key} "
                f"(it translates only {sorted(_TRANSLATED)})")
        if key == "mem_limit":
            out["memory"] = _memory_bytes(value)
        elif key == "nano_cpus":
            out["cpus"] = int(value) / 1e9
        elif key == "pids_limit":
            out["pids_limit"] = int(value)
        elif key == "device_requests":
            out["gpus"] = _gpus(value)
        elif key == "labels":
            out["labels"] = dict(value)
    return out


def _mount_fields(mount: Any) -> Dict[str, Any]:
    """A docker.types.Mount (a dict in the Engine API's shape) as plain fields."""
    m = dict(mount)
    return {
        "type": m.get("Type"),
        "source": m.get("Source"),
        "target": m.get("Target"),
        "read_only": bool(m.get("ReadOnly", False)),
        "tmpfs_mode": (m.get("TmpfsOptions") or {}).get("Mode"),
        "other": sorted(k for k in m if k not in
                        ("Type", "Source", "Target", "ReadOnly", "TmpfsOptions")),
    }


def _refused(rule: str, value: str, message: str) -> RuntimeError:
    return RuntimeError(f"mount-plan refused the job container: {message} (rule {rule}, "
                        f"value {value!r})")


class _Container:
    """What FLARE's DockerJobHandle reads of a docker-py Container, from a LaunchHandle."""

    def __init__(self, handle: mount_plan.LaunchHandle, name: str, engine: "_MountPlanEngine"):
        self.handle = handle
        self.name = name
        self._engine = engine
        self.id = handle.container or name

    def _result(self):
        """(exit code, cancelled) once the launch ended."""
        try:
            return self.handle.poll(), False
        except mount_plan.LaunchError as e:
            return 1, e.rule == "cancelled"

    @property
    def status(self) -> str:
        if not self.handle.done:
            return "running" if self.handle.command_ran else "created"
        _, cancelled = self._result()
        return "dead" if cancelled else "exited"

    @property
    def attrs(self) -> Dict[str, Any]:
        code = self._result()[0] if self.handle.done else None
        return {"Id": self.id, "Name": self.name,
                "State": {"Status": self.status, "ExitCode": code}}

    def wait(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        try:
            code = self.handle.wait(timeout)
        except mount_plan.LaunchError as e:
            if e.rule == "cancelled":
                raise docker.errors.NotFound(f"{self.name}: terminated") from e
            code = 1
        return {"StatusCode": code}

    def stop(self, timeout: Optional[float] = None) -> None:
        self.handle.terminate()

    def kill(self, signal: Any = None) -> None:
        self.handle.terminate()

    def remove(self, force: bool = False, **_: Any) -> None:
        # mount-plan removes the container itself when the launch ends.
        self.handle.terminate()
        self._engine._forget(self.id)

    def reload(self) -> None:
        pass


class _Containers:
    def __init__(self, engine: "_MountPlanEngine"):
        self._engine = engine

    def run(self, image: str, command=None, **kwargs: Any) -> _Container:
        return self._engine.run(image, command, **kwargs)

    def get(self, container_id: str) -> _Container:
        with self._engine._lock:
            container = self._engine._containers.get(container_id)
        if container is None:
            raise docker.errors.NotFound(f"no such container: {container_id}")
        return container


class _MountPlanEngine:
    """The docker-py client FLARE's launcher talks to: ``containers.run`` plans, verifies and
    starts the job with mount-plan; ``containers.get`` answers from the launch handles."""

    def __init__(self, launcher: "_MountPlanLauncher"):
        self._launcher = launcher
        self._lock = threading.Lock()
        self._containers: Dict[str, _Container] = {}
        self.containers = _Containers(self)
        #: Every launch: (container name, LaunchHandle), for reports and tests.
        self.launched: List[tuple] = []

    def ping(self) -> bool:
        return True

    def _forget(self, container_id: str) -> None:
        with self._lock:
            self._containers.pop(container_id, None)

    def translate(self, image: str, command, **kwargs: Any):
        """FLARE's ``containers.run`` call as (the plan's layout arguments, the workspace, the
        job, mount_plan.start's keyword arguments); RuntimeError for what the contract cannot
        express. Pure: nothing is checked on the host, nothing is launched."""
        launcher = self._launcher
        mounts = [_mount_fields(m) for m in kwargs.pop("mounts", None) or []]
        if kwargs.pop("volumes", None):
            raise _refused("nvflare-weakens", "volumes", "volumes are not planned mounts")
        for m in mounts:
            if m["other"]:
                raise _refused("nvflare-unsupported", ",".join(m["other"]),
                               f"mount options of {m['target']}")
        roots = [m for m in mounts if m["type"] == "tmpfs" and m["target"] == WORKSPACE_MOUNT]
        if len(roots) != 1 or roots[0]["tmpfs_mode"] not in (None, 0o1777, 0o555):
            raise _refused("nvflare-layout", WORKSPACE_MOUNT,
                           "FLARE's workspace root tmpfs is not the one expected")
        binds = [m for m in mounts if m is not roots[0]]
        shared = {}
        for name in ("startup", "local"):
            found = [m for m in binds if m["target"] == f"{WORKSPACE_MOUNT}/{name}"]
            if len(found) != 1 or not found[0]["read_only"] or found[0]["type"] != "bind":
                raise _refused("nvflare-layout", name, f"{name}/ is not bound read-only")
            shared[name] = found[0]
        workspace = os.path.dirname(shared["startup"]["source"])
        if os.path.dirname(shared["local"]["source"]) != workspace:
            raise _refused("nvflare-layout", shared["local"]["source"],
                           "startup/ and local/ are not in one workspace")
        workdir = kwargs.pop("working_dir", None)
        job_binds = [m for m in binds if m["target"] == workdir and m["type"] == "bind"]
        if not workdir or len(job_binds) != 1 or job_binds[0]["read_only"]:
            raise _refused("nvflare-layout", str(workdir), "the job directory is not bound "
                           "read-write as the working directory")
        job = os.path.basename(workdir)
        if job_binds[0]["source"] != os.path.join(workspace, job):
            raise _refused("nvflare-layout", job_binds[0]["source"],
                           "the job directory is not the workspace's")
        extra = []
        for m in binds:
            if m in shared.values() or m is job_binds[0]:
                continue
            if m["type"] != "bind":
                raise _refused("nvflare-unsupported", str(m["type"]), f"mount {m['target']}")
            extra.append({"source": m["source"], "target": m["target"],
                          "read_only": m["read_only"]})
        layout = {"container_root": WORKSPACE_MOUNT, "shared": ["startup", "local"],
                  "root": "scratch", "scratch_size": launcher.scratch_size,
                  "extra_mounts": extra}

        name = kwargs.pop("name", None)
        network = kwargs.pop("network", None) or "none"
        environment = kwargs.pop("environment", None) or {}
        user = kwargs.pop("user", None)
        for ignored in ("detach", "auto_remove"):  # mount-plan always detaches and removes
            kwargs.pop(ignored, None)
        try:
            options = _translate_kwargs(kwargs, "the job's container options")
        except NvflareConfigError as e:
            raise _refused(e.rule, e.value, str(e)) from e
        labels = dict(launcher.labels)
        labels.update(options.pop("labels", {}))
        # Paths as the parent sees them (its own workspace when it runs on the host, where
        # FLARE's parent container sees WORKSPACE_MOUNT) as the job sees them.
        command = [launcher._job_path(arg) for arg in command or []]
        environment = {k: launcher._job_path(v) for k, v in dict(environment).items()}
        if launcher.parent_host:
            command = [launcher._parent_address(arg) for arg in command]
        start_kwargs = dict(
            command=command, runtime=launcher.runtime, socket=launcher.socket,
            userns=launcher.userns, user=launcher.user or user, env=environment,
            network=network, name=name, labels=labels, stop_grace=launcher.stop_grace,
            accept_missing=launcher.accept_missing, require=launcher.require,
            cap_add=launcher.cap_add, **options)
        return layout, workspace, job, image, start_kwargs

    def run(self, image: str, command=None, **kwargs: Any) -> _Container:
        layout, workspace, job, image, start_kwargs = self.translate(image, command, **kwargs)
        launcher = self._launcher
        try:
            plan = mount_plan.plan(workspace, job, **layout)
            verified = mount_plan.verify(
                plan, launcher_workspace=launcher.launcher_workspace,
                permissions=launcher.permissions)
        except (mount_plan.PlanError, mount_plan.HostCheckError) as e:
            raise _refused(e.rule, str(e.value), str(e)) from e
        container_name = start_kwargs["name"] or job
        on_output = launcher._output_callback(container_name)
        on_event = None
        if launcher.on_event is not None:
            def on_event(event, _name=container_name, _hook=launcher.on_event):
                _hook(_name, event)
        handle = mount_plan.start(verified, image, on_output=on_output, on_event=on_event,
                                  **start_kwargs)
        # FLARE's launcher answers once the container exists: wait for it (or the refusal).
        deadline = time.monotonic() + launcher.timeout
        while not handle.done and handle.container is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if handle.container is None:
            try:
                handle.wait(max(0.0, deadline - time.monotonic()))
            except mount_plan.LaunchError as e:
                raise _refused(e.rule, str(e.value), str(e)) from e
            except TimeoutError:
                handle.terminate()
                raise _refused("nvflare-timeout", job, "no container within the timeout")
        container = _Container(handle, start_kwargs["name"] or job, self)
        with self._lock:
            self._containers[container.id] = container
            self.launched.append((container.name, handle))
        return container


class _MountPlanLauncher:
    """The settings mount-plan adds to FLARE's Docker launcher (a mixin: see the classes)."""

    # Set by FLARE's constructor.
    workspace: Optional[str]
    timeout: int

    def __init__(
        self,
        workspace: Optional[str] = None,
        network: str = "nvflare-network",
        python_path: Optional[str] = None,
        timeout: int = 30,
        default_job_container_kwargs: Optional[dict] = None,
        default_job_env: Optional[dict] = None,
        default_python_path: Optional[str] = None,
        *,
        runtime: str = "docker",
        socket: Optional[str] = None,
        userns: Optional[str] = None,
        user: Optional[str] = None,
        parent_host: Optional[str] = None,
        launcher_workspace: Optional[str] = None,
        scratch_size: int = DEFAULT_SCRATCH_SIZE,
        stop_grace: float = 10.0,
        accept_missing: Optional[Sequence[str]] = None,
        require: Optional[Sequence[str]] = None,
        cap_add: Optional[Sequence[str]] = None,
        labels: Optional[dict] = None,
        permissions: Literal["refuse", "warn"] = "refuse",
        job_output: Optional[str] = None,
        on_event: Optional[Any] = None,
    ):
        """FLARE's Docker launcher's arguments (same meaning), then mount-plan's:

        runtime: ``docker`` or ``podman`` (the engine; ``socket`` its API socket, ``userns``
            Podman's ``keep-id``).
        user: ``UID[:GID]`` the jobs run as (default: FLARE's, the parent's uid:gid).
        parent_host: the address jobs reach their parent at (default: the site name, FLARE's
            rule for a parent running in a container on ``network``). A parent running on the
            host listens on the host: give the host's address on ``network`` (its gateway).
        launcher_workspace: where this process sees ``workspace`` (FLARE's parent container
            sees it at /var/tmp/nvflare/workspace); default: the same path.
        scratch_size: bytes of the workspace-root tmpfs.
        stop_grace, accept_missing, require, cap_add, labels, permissions: as
            ``mount_plan.start`` and ``mount_plan.verify``.
        job_output: a directory; each job's output goes to ``<job_output>/<job>.log`` (default:
            this process's stdout and stderr).
        on_event: called as ``on_event(container name, event)`` with every lifecycle event
            (``mount_plan.start``'s), from the launch's thread, before the lifecycle goes on.
        """
        if network in ("host",) or str(network).startswith("container:"):
            raise NvflareConfigError("nvflare-weakens", f"network={network}",
                                     "a job sharing the host's or a container's network "
                                     "namespace is outside the contract")
        if runtime not in ("docker", "podman"):
            raise NvflareConfigError("nvflare-runtime", str(runtime),
                                     "runtime is docker or podman")
        self._site_options = _translate_kwargs(dict(default_job_container_kwargs or {}),
                                               "default_job_container_kwargs")
        # FLARE's own constructor checks the rest (reserved keys, python path).
        self._flare_init(workspace, network, python_path, timeout, default_job_container_kwargs,
                         default_job_env, default_python_path)
        if self.workspace and not os.path.isabs(self.workspace):
            raise NvflareConfigError("nvflare-workspace", str(self.workspace),
                                     "workspace must be an absolute host path")
        self.runtime = runtime
        self.socket = socket
        self.userns = userns
        self.user = user
        self.parent_host = parent_host
        self.launcher_workspace = launcher_workspace
        self.scratch_size = int(scratch_size)
        self.stop_grace = float(stop_grace)
        self.accept_missing = list(accept_missing or [])
        self.require = list(require or [])
        self.cap_add = list(cap_add or [])
        self.labels = dict(labels or {})
        self.permissions = permissions
        self.job_output = job_output
        self.on_event = on_event
        self._engine = _MountPlanEngine(self)
        self._site = threading.local()

    def _flare_init(self, *args):
        raise NotImplementedError

    def _get_docker_client(self):
        return self._engine

    def _job_path(self, value: str) -> str:
        """A path under the workspace as this process sees it, as the job sees it."""
        seen = os.path.normpath(self.launcher_workspace or self.workspace or WORKSPACE_MOUNT)
        if not isinstance(value, str) or seen == WORKSPACE_MOUNT:
            return value
        parts = value.split(os.pathsep) if os.pathsep in value else [value]
        out = []
        for part in parts:
            if part == seen or part.startswith(seen + "/"):
                part = WORKSPACE_MOUNT + part[len(seen):]
            out.append(part)
        return os.pathsep.join(out)

    def _parent_address(self, arg: str) -> str:
        """A parent URL FLARE rewrote to ``<scheme>://<site>:<port>``, pointed at parent_host."""
        site = getattr(self._site, "name", None)
        if not site:
            return arg
        match = re.fullmatch(r"(tcp|stcp)://" + re.escape(site) + r":([0-9]+)(.*)", arg)
        if not match:
            return arg
        return f"{match.group(1)}://{self.parent_host}:{match.group(2)}{match.group(3)}"

    def _output_callback(self, name: str):
        if not self.job_output:
            return None
        os.makedirs(self.job_output, exist_ok=True)
        path = os.path.join(self.job_output, f"{name}.log")
        lock = threading.Lock()

        def write(stream: str, data: bytes) -> None:
            with lock, open(path, "ab") as f:
                f.write(data)
        return write

    @property
    def engine(self) -> _MountPlanEngine:
        """The engine FLARE's launcher talks to (``launched`` lists every launch)."""
        return self._engine

    def launch_job(self, job_meta: dict, fl_ctx: FLContext) -> JobHandleSpec:
        self._site.name = fl_ctx.get_identity_name()
        try:
            # The site's defaults were checked and translated at construction; FLARE merges
            # them into the job's options as it always does.
            return super().launch_job(job_meta, fl_ctx)  # type: ignore[misc]
        finally:
            self._site.name = None


class ServerJobLauncher(_MountPlanLauncher, _flare.ServerDockerJobLauncher):
    """FLARE's ``ServerDockerJobLauncher``, every server job launched by mount-plan."""

    def _flare_init(self, *args):
        _flare.ServerDockerJobLauncher.__init__(self, *args)


class ClientJobLauncher(_MountPlanLauncher, _flare.ClientDockerJobLauncher):
    """FLARE's ``ClientDockerJobLauncher``, every client job launched by mount-plan."""

    def _flare_init(self, *args):
        _flare.ClientDockerJobLauncher.__init__(self, *args)
