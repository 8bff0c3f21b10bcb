"""Hatchling build hook: compiles the pgoutput decoder's kernels (a CPython extension module,
analytics_assets/lib/_pgoutput_kernels.c) into every wheel and editable install, so `pip install
.`, `uv pip install .` and `make install` all run the same decoder. Needs a C compiler (`CC`,
default `cc`) and Python's headers; without them the build stops and says so."""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script by `make install` (hatchling lives in the build env)
    BuildHookInterface = object

SOURCE = Path("analytics_assets/lib/_pgoutput_kernels.c")


def build_kernels(root: Path) -> Path:
    """Compile the extension next to its source; returns the built file."""
    target = root / SOURCE.with_name("_pgoutput_kernels" + sysconfig.get_config_var("EXT_SUFFIX"))
    source = root / SOURCE
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    include = sysconfig.get_paths()["include"]
    command = [
        *shlex.split(os.environ.get("CC", "cc")),
        "-O2",
        "-shared",
        "-fPIC",
        f"-I{include}",
        str(source),
        "-o",
        str(target),
    ]
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            f"building the pgoutput decoder's kernels failed ({exc}): install a C compiler "
            f"(CC, default cc) and Python's headers ({include}/Python.h)"
        ) from exc
    return target


class KernelsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships the C source, built when its wheel is
        built = build_kernels(Path(self.root))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(built)] = str(built.relative_to(self.root))


if __name__ == "__main__":
    print(build_kernels(Path(__file__).resolve().parent))
