"""Finds and loads the op library (libxattn_ops.so), which registers torch.ops.xattn.*.

Where it is looked for, in order:

1. ``XATTN_OPS``: a path to libxattn_ops.so, e.g. ``build/runtime/libxattn_ops.so`` when the
   package is used from the source tree (``PYTHONPATH=python``) instead of installed;
2. beside this file, where ``pip install .`` puts it.
"""

import os

LIBRARY_NAME = "libxattn_ops.so"
ENVIRONMENT_VARIABLE = "XATTN_OPS"

_loaded_path = None


def library_path():
    """The op library this package loads (absolute path); raises ImportError when none exists."""
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override:
        if not os.path.isfile(override):
            raise ImportError(
                f"{ENVIRONMENT_VARIABLE}={override}: no such file; point it at a built "
                f"{LIBRARY_NAME} (e.g. build/runtime/{LIBRARY_NAME}) or unset it to use the "
                "installed one")
        return os.path.abspath(override)
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    if os.path.isfile(beside):
        return beside
    raise ImportError(
        f"xattn: {LIBRARY_NAME} is not installed beside {os.path.dirname(beside)}; install the "
        "package with `pip install --no-build-isolation .` from the xattn repository (README, "
        f"Python), or set {ENVIRONMENT_VARIABLE}=build/runtime/{LIBRARY_NAME} to use a build tree")


def load():
    """Loads the op library once per process; returns its path."""
    global _loaded_path
    if _loaded_path is None:
        import torch

        path = library_path()
        torch.ops.load_library(path)
        _loaded_path = path
    return _loaded_path
