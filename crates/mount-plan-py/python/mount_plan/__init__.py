"""Give every job container an isolated view of a shared workspace (see ``__init__.pyi``).

Everything is the compiled extension ``mount_plan.mount_plan`` (the Rust crates); the
submodule ``mount_plan.nvflare`` holds NVIDIA FLARE's job launchers, written on top of it.
"""

from . import mount_plan as _native
from .mount_plan import *  # noqa: F401,F403
from .mount_plan import __doc__, __version__  # noqa: F401

__all__ = sorted(n for n in dir(_native) if not n.startswith("_")) + ["__version__"]
