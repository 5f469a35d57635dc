"""Finding and preparing the real tritonserver.

Inside NVIDIA's container ``tritonserver`` is on PATH with its backends in
/opt/tritonserver/backends. Elsewhere it comes from the nvidia-pytriton wheel, which ships
the server, the Python backend and one backend stub per Python version; the stub matching
the running interpreter is put in place here, and the environment is set so the stub loads
this interpreter's libpython and site-packages (see docs/architecture.md).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from .weights_layout import WEIGHTS_ENV

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "i2tt"


@dataclass
class ServerBinary:
    executable: Path
    backend_dir: Path
    cache_dir: Path | None
    library_path: list[str] = field(default_factory=list)


def find_tritonserver() -> ServerBinary:
    on_path = shutil.which("tritonserver")
    if on_path:
        root = Path(on_path).resolve().parent.parent  # /opt/tritonserver
        caches = root / "caches"
        return ServerBinary(Path(on_path), root / "backends", caches if caches.is_dir() else None)
    try:
        import pytriton
    except ImportError:
        raise RuntimeError("no tritonserver on PATH and nvidia-pytriton is not installed; "
                           "install the server package (pip install ./server)") from None
    wheel = Path(pytriton.__file__).parent / "tritonserver"
    return ServerBinary(wheel / "bin" / "tritonserver", _wheel_backends(wheel), wheel / "caches",
                        [str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")])


def _wheel_backends(wheel: Path) -> Path:
    """A backends folder whose python backend has the stub for this interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    target = CACHE_DIR / "backends" / version / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in [stub, *(wheel / "backends" / "python").glob("*.*")]:
        dest = target / source.name
        if not dest.exists() or dest.stat().st_size != source.stat().st_size:
            shutil.copy2(source, dest)
    return target.parent


def server_environment(binary: ServerBinary, weights: str | os.PathLike | None) -> dict[str, str]:
    env = dict(os.environ)
    # The stub runs the first python3 on PATH and must link this interpreter's libpython,
    # not the system's (a mismatch breaks C extensions inside the stub).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", *binary.library_path,
               env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
    if weights:
        env[WEIGHTS_ENV] = str(Path(weights).resolve())
    return env


def has_gpu() -> bool:
    """Whether the model processes will see a CUDA device (they decide with torch too)."""
    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None
    return torch.cuda.is_available()
