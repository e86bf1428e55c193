"""Builds the `xattn` Python package: the sources in python/xattn plus the op library
(libxattn_ops.so, CMake target xattn_ops) copied beside them.

    python3 -m venv --system-site-packages .venv && .venv/bin/pip install --no-build-isolation .

No network: setuptools runs CMake on this repository (only the targets the op library needs,
tests and examples off). Environment:

* XATTN_CMAKE_BUILD_DIR: an existing, configured CMake build folder; its xattn_ops target is
  built there (a no-op when up to date) instead of configuring a new folder.
* XATTN_CMAKE_ARGS: extra arguments for the configure step (e.g. -DXATTN_ENABLE_CUDA=OFF).
* CMAKE_BUILD_PARALLEL_LEVEL: build jobs (default: all cores).

Without XATTN_CMAKE_BUILD_DIR the build folder is build-python/ in the repository root. CMake
is pointed at the LibTorch of the interpreter running this file when that torch ships its CMake
files (pip's torch does; Debian's python3-torch uses the system LibTorch CMake finds anyway), so
the op library is built against the torch that will load it.
"""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libxattn_ops.so"
SCRATCH = os.path.join(ROOT, "build-python")
os.makedirs(SCRATCH, exist_ok=True)


def _torch_cmake_prefix():
    try:
        import torch.utils
    except ImportError:
        sys.exit("xattn: torch is not importable by this Python; install PyTorch first (Debian: "
                 "apt-get install python3-torch) and build with --no-build-isolation")
    prefix = getattr(torch.utils, "cmake_prefix_path", "")
    return prefix if prefix and os.path.isdir(prefix) else None


def _run(command):
    print("xattn:", " ".join(shlex.quote(c) for c in command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def build_op_library():
    """Configures (unless XATTN_CMAKE_BUILD_DIR is given) and builds xattn_ops; returns its path."""
    if shutil.which("cmake") is None:
        sys.exit("xattn: cmake not found; install it (Debian: scripts/setup.sh) and retry")
    build_dir = os.environ.get("XATTN_CMAKE_BUILD_DIR")
    if build_dir:
        build_dir = os.path.abspath(build_dir)
        if not os.path.isfile(os.path.join(build_dir, "CMakeCache.txt")):
            sys.exit(f"xattn: XATTN_CMAKE_BUILD_DIR={build_dir} is not a configured CMake build "
                     "folder (no CMakeCache.txt); configure it first or unset the variable")
    else:
        build_dir = SCRATCH
        configure = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                     "-DXATTN_BUILD_TESTS=OFF", "-DXATTN_BUILD_EXAMPLES=OFF"]
        if shutil.which("ninja") and not os.path.isfile(os.path.join(build_dir,
                                                                      "CMakeCache.txt")):
            configure += ["-G", "Ninja"]
        prefix = _torch_cmake_prefix()
        if prefix:
            configure.append(f"-DCMAKE_PREFIX_PATH={prefix}")
        configure += shlex.split(os.environ.get("XATTN_CMAKE_ARGS", ""))
        _run(configure)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    _run(["cmake", "--build", build_dir, "--target", "xattn_ops", "-j", jobs])
    library = os.path.join(build_dir, "runtime", LIBRARY)
    if not os.path.isfile(library):
        sys.exit(f"xattn: the build finished but {library} is missing")
    return library


class BuildWithOpLibrary(build_py):
    """build_py that also puts the op library into the package."""

    def run(self):
        super().run()
        library = build_op_library()
        target = os.path.join(self.build_lib, "xattn", LIBRARY)
        self.mkpath(os.path.dirname(target))
        self.copy_file(library, target)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform and Python."""

    def has_ext_modules(self):
        return True


setup(
    name="xattn",
    version="0.1.0",
    description="XAttention block-sparse prefill with per-head threshold profiles",
    license="Apache-2.0",
    packages=["xattn"],
    package_dir={"": "python"},
    python_requires=">=3.8",
    # torch and h5py are not declared: pip must not replace the system's PyTorch (the op library
    # is built against it); h5py and numpy are needed only for HDF5 profiles and captures.
    cmdclass={"build_py": BuildWithOpLibrary},
    distclass=BinaryDistribution,
    zip_safe=False,
    # setuptools' scratch files go under build-python/ too, never into build/ (the CMake build
    # folder of scripts/build.sh) or the source folders.
    options={"build": {"build_base": os.path.join(SCRATCH, "setuptools")},
             "egg_info": {"egg_base": SCRATCH}},
)
