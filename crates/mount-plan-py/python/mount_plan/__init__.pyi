"""Give every job container an isolated view of a shared workspace.

A container planned by mount-plan sees exactly: an empty tmpfs at the workspace root R
(read-only by default), the shared directories of the workspace W read-only at R/<name>, the
job directory W/J read-write at R/J (its working directory), and nothing else of W.

Every rule lives in the Rust crates; errors carry the rule id (``.rule``) and the refused
value (``.value``).
"""

import os
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Tuple, Union, final

__all__ = [
    "BindMount",
    "HostCheckError",
    "LaunchError",
    "LaunchHandle",
    "Layout",
    "Plan",
    "PlanError",
    "TmpfsMount",
    "VerifiedPlan",
    "check_name",
    "launch",
    "plan",
    "start",
    "verify",
    "__version__",
]

__version__: str

_StrPath = Union[str, "os.PathLike[str]"]
_RootName = Literal["read-only", "scratch"]
_ExtraMount = Union[Mapping[str, Any], Tuple[str, str, bool]]

class PlanError(ValueError):
    """A name, path or layout broke a rule of the core."""

    rule: str
    """The rule id: ``reserved``, ``bad-char``, ``not-absolute``, ``shared-name``..."""
    value: Optional[str]
    """The refused value, as text (None when the rule concerns no single value)."""

class HostCheckError(Exception):
    """A host check failed (``verify``)."""

    rule: str
    """The rule id: ``symlink``, ``missing``, ``exists``, ``other-filesystem``, ``permissions``..."""
    value: Optional[str]
    """The refused path (as the engine sees it), or the refused mode or launcher path."""
    path: Optional[str]
    """The path as the engine sees it, when the check concerned a path."""
    launcher_path: Optional[str]
    """The path this process checked (differs with ``launcher_workspace``)."""
    what: Optional[str]
    """``workspace``, ``shared directory``, ``job directory``, ``extra mount source``..."""

class LaunchError(Exception):
    """A launch failed (``launch``)."""

    rule: str
    """The rule id: ``connect``, ``image-missing``, ``protection-unavailable``, ``audit``,
    ``cancelled``, or a spec rule (``env-key``, ``user``, ``network-namespace``...)."""
    value: Optional[str]
    """The value the failure concerns, when there is one: the endpoint, the protection id, the
    refused spec value, the image, the job or the container."""
    container: Optional[str]
    """The container that was created, if any (it was removed unless it could not be)."""
    command_ran: bool
    """Whether the command may have run."""

@final
class Layout:
    """A validated layout: container root R, shared read-only directories, root tmpfs policy,
    extra mounts. Keyword arguments are the CLI's layout options; ``layout`` is a TOML layout
    file whose settings the other arguments override."""

    def __new__(
        cls,
        *,
        container_root: Optional[str] = None,
        shared: Optional[Sequence[str]] = None,
        no_shared: bool = False,
        root: Optional[_RootName] = None,
        scratch_size: Optional[int] = None,
        layout: Optional[_StrPath] = None,
        extra_mounts: Optional[Sequence[_ExtraMount]] = None,
    ) -> "Layout": ...
    @staticmethod
    def from_file(path: _StrPath) -> "Layout":
        """The layout of a TOML layout file (raises PlanError with rule ``layout-file`` when it
        is not one, OSError when it cannot be read)."""
    @property
    def container_root(self) -> str: ...
    @property
    def shared(self) -> list[str]: ...
    @property
    def root(self) -> _RootName: ...
    @property
    def root_size_bytes(self) -> int: ...
    @property
    def extra_mounts(self) -> list[dict[str, Any]]: ...
    def job(self, name: Union[str, bytes]) -> str:
        """The name if it is a valid job name in this layout; raises PlanError."""
    def plan(self, workspace: _StrPath, job: Union[str, bytes]) -> "Plan": ...
    def to_dict(self) -> dict[str, Any]:
        """The layout as a layout file's keys."""

@final
class TmpfsMount:
    """The tmpfs at the container root R."""

    @property
    def kind(self) -> Literal["tmpfs"]: ...
    @property
    def target(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def mode(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def nosuid(self) -> bool: ...
    @property
    def nodev(self) -> bool: ...
    @property
    def noexec(self) -> bool: ...

@final
class BindMount:
    """A bind of a host directory: never recursive, private propagation."""

    @property
    def kind(self) -> Literal["bind"]: ...
    @property
    def role(self) -> Literal["shared", "job", "extra"]: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def recursive(self) -> bool: ...
    @property
    def propagation(self) -> Literal["private"]: ...
    @property
    def nosuid(self) -> bool: ...
    @property
    def nodev(self) -> bool: ...
    @property
    def noexec(self) -> bool: ...

@final
class Plan:
    """The mounts and working directory of one job container."""

    @property
    def job(self) -> str: ...
    @property
    def workspace(self) -> str: ...
    @property
    def container_root(self) -> str: ...
    @property
    def workdir(self) -> str:
        """The working directory R/J."""
    @property
    def mounts(self) -> list[Union[TmpfsMount, BindMount]]:
        """Every mount in mount order: the root tmpfs, then the binds."""
    def to_dict(self) -> dict[str, Any]:
        """Exactly what ``mount-plan plan --format json`` prints."""
    def docker_mounts(self) -> list[dict[str, Any]]:
        """The Engine API's ``HostConfig.Mounts`` list, for docker-py's ``mounts=``. Pass
        ``security_opt=["no-new-privileges"]`` (Docker cannot set nosuid on binds) and
        ``cap_drop=["ALL"]`` too."""
    def docker_args(self) -> list[str]:
        """``docker run`` arguments: CSV-quoted ``--mount`` values, ``--workdir``,
        ``--security-opt no-new-privileges``, ``--cap-drop ALL``."""
    def podman_args(self) -> list[str]:
        """``podman run`` arguments: CSV-quoted ``--mount`` values, ``--workdir``,
        ``--cap-drop ALL``."""
    def oci_mounts(self) -> list[dict[str, Any]]:
        """OCI runtime-spec mounts: ``destination``, ``type``, ``source``, ``options``."""

@final
class VerifiedPlan:
    """A plan whose bind sources were checked on the real filesystem, with (device, inode)
    pins. The only plan ``launch`` takes. Holds a shared lock on the job directory while it
    lives."""

    @property
    def plan(self) -> Plan: ...
    @property
    def workdir(self) -> str: ...
    @property
    def pins(self) -> dict[str, Any]:
        """``{"workspace": {"dev", "ino"}, "binds": [{"target", "source", "role", "dev", "ino"}]}``"""
    @property
    def workspace_pin(self) -> Tuple[int, int]: ...
    @property
    def job_pin(self) -> Tuple[int, int]: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def launcher_workspace(self) -> str: ...
    @property
    def job_dir_created(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]:
        """Exactly what ``mount-plan plan --verify --format json`` prints."""

def plan(
    workspace: _StrPath,
    job: Union[str, bytes],
    *,
    layout: Union[Layout, _StrPath, None] = None,
    container_root: Optional[str] = None,
    shared: Optional[Sequence[str]] = None,
    no_shared: bool = False,
    root: Optional[_RootName] = None,
    scratch_size: Optional[int] = None,
    extra_mounts: Optional[Sequence[_ExtraMount]] = None,
) -> Plan:
    """The plan of job ``job`` in the host workspace ``workspace``. ``layout`` is a Layout or
    a TOML layout file; the other keyword arguments are the CLI's layout options."""

def check_name(name: Union[str, bytes], layout: Optional[Layout] = None) -> str:
    """The name if it is a valid job name (in ``layout``, default: the default layout, whose
    reserved names are ``startup`` and ``local`` in any ASCII case); raises PlanError."""

def verify(
    plan: Plan,
    *,
    create_job_dir: Union[None, bool, Literal["if-missing", "fresh"]] = None,
    job_dir_mode: int = 0o750,
    job_dir_owner: Optional[Tuple[int, int]] = None,
    launcher_workspace: Optional[_StrPath] = None,
    expected_owner: Optional[int] = None,
    permissions: Literal["refuse", "warn"] = "refuse",
    refuse_hard_links: bool = False,
    strict_paths: bool = False,
) -> VerifiedPlan:
    """Check the plan against the real workspace without following links, pin every bind
    source; raises HostCheckError naming the rule and the path."""

_OutputCallback = Callable[[Literal["stdout", "stderr"], bytes], object]

def launch(
    plan: VerifiedPlan,
    image: str,
    command: Optional[Sequence[str]] = None,
    *,
    runtime: Literal["docker", "podman"] = "docker",
    socket: Optional[str] = None,
    userns: Optional[Literal["default", "keep-id"]] = None,
    user: Optional[str] = None,
    env: Union[Mapping[str, str], Sequence[str], None] = None,
    network: str = "none",
    name: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    gpus: Optional[str] = None,
    memory: Optional[int] = None,
    cpus: Optional[float] = None,
    pids_limit: Optional[int] = None,
    keep: bool = False,
    stop_grace: float = 10.0,
    accept_missing: Optional[Sequence[str]] = None,
    require: Optional[Sequence[str]] = None,
    cap_add: Optional[Sequence[str]] = None,
    connect_timeout: float = 10.0,
    on_output: Optional[_OutputCallback] = None,
    on_event: Optional[Callable[[dict[str, Any]], object]] = None,
) -> int:
    """The whole lifecycle of ``mount-plan launch``: create (labelled), audit, start, audit,
    stream the output, wait, remove; on any failure nothing is left behind. Returns the
    command's exit status. The options are the CLI's (``--runtime``, ``--socket``,
    ``--userns``, ``--user U[:G]``, ``--env``, ``--network``, ``--name``, ``--label``,
    ``--gpus``, ``--memory``, ``--cpus``, ``--pids-limit``, ``--keep``, ``--stop-grace``,
    ``--accept-missing`` for a contract protection the engine lacks; ``--require``: hardening
    (``nosuid``, ``nodev``, ``noexec``) the site requires, which an engine that cannot apply it
    refuses (by default such a launch goes ahead with one warning: Docker and noexec);
    ``--cap-add``: every
    capability is dropped and only ``cap_add`` added back, e.g. ``cap_add=["CHOWN"]``; MKNOD,
    FSETID, SETFCAP, SYS_ADMIN... raise LaunchError with rule ``capability-forbidden``).

    Blocks with the GIL released. Output goes to ``on_output(stream, data)``, else to
    ``sys.stdout``/``sys.stderr``; lifecycle events (``launching``, ``created``, ``started``,
    ``exited``, ``removed``, ``kept``, ``warning``...) to ``on_event(dict)``; every warning
    (the CLI's ``mount-plan: warning:`` lines, the same messages) is also a RuntimeWarning. A KeyboardInterrupt (or an exception raised by a callback) cancels
    the launch: the container is stopped (``stop_grace``) and removed, then the exception is
    raised. Raises LaunchError (rule, value, container, command_ran) otherwise; a failure
    before the command ran releases a job directory the host check created."""

@final
class LaunchHandle:
    """A launch started by ``start``: the same lifecycle as ``launch``, running on its own
    thread. Safe to use from several threads at once (every wait releases the GIL). Dropping
    the handle while the launch runs cancels it (its container is stopped and removed): keep
    it until ``wait``, ``poll`` or ``terminate`` said it ended. A ``with`` block terminates it
    on leaving."""

    def poll(self) -> Optional[int]:
        """None while the launch runs; then the command's exit status, or raises its
        LaunchError (rule ``cancelled`` after ``terminate``) or the exception a callback
        raised. Never blocks."""
    def wait(self, timeout: Optional[float] = None) -> int:
        """Block (GIL released) until the launch ended: the command's exit status, or raises
        as ``poll``. With ``timeout`` (seconds), raises TimeoutError when it still runs then
        (the launch goes on). A KeyboardInterrupt while waiting terminates the launch (its
        container is stopped and removed), then is raised."""
    def terminate(self) -> None:
        """Cancel the launch and wait until it is cleaned up: a running container is stopped
        (``stop_grace``) and removed. Nothing happens to a launch that ended."""
    @property
    def done(self) -> bool:
        """Whether the launch ended (its container removed, or kept with ``keep``)."""
    @property
    def job(self) -> str: ...
    @property
    def events(self) -> list[dict[str, Any]]:
        """The lifecycle events so far, as ``on_event`` receives them."""
    @property
    def container(self) -> Optional[str]:
        """The container's id once it was created."""
    @property
    def command_ran(self) -> bool:
        """Whether the command may have run (False: it certainly did not)."""
    def __enter__(self) -> "LaunchHandle": ...
    def __exit__(self, *args: object) -> bool: ...

def start(
    plan: VerifiedPlan,
    image: str,
    command: Optional[Sequence[str]] = None,
    *,
    runtime: Literal["docker", "podman"] = "docker",
    socket: Optional[str] = None,
    userns: Optional[Literal["default", "keep-id"]] = None,
    user: Optional[str] = None,
    env: Union[Mapping[str, str], Sequence[str], None] = None,
    network: str = "none",
    name: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    gpus: Optional[str] = None,
    memory: Optional[int] = None,
    cpus: Optional[float] = None,
    pids_limit: Optional[int] = None,
    keep: bool = False,
    stop_grace: float = 10.0,
    accept_missing: Optional[Sequence[str]] = None,
    require: Optional[Sequence[str]] = None,
    cap_add: Optional[Sequence[str]] = None,
    connect_timeout: float = 10.0,
    on_output: Optional[_OutputCallback] = None,
    on_event: Optional[Callable[[dict[str, Any]], object]] = None,
) -> LaunchHandle:
    """``launch`` without blocking: returns at once a LaunchHandle; the options are
    ``launch``'s. A bad option raises LaunchError here, before anything runs; everything else
    (the engine's refusals included) is the handle's outcome. ``on_output`` and ``on_event``
    are called from the launch's thread (output goes to ``sys.stdout``/``sys.stderr``
    without ``on_output``); an exception they raise cancels the launch and is raised by
    ``wait`` and ``poll``. Every warning is also a RuntimeWarning."""
