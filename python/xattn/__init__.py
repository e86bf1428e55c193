"""xattn: XAttention block-sparse prefill with per-head thresholds, from Python.

    import torch, xattn
    profile = xattn.load_profile("profiles/xattn-byte.h5")      # HDF5 or its JSON export
    out, lse = xattn.ops.prefill(q, k, v, profile.layer(0), return_lse=True)
    xattn.patch_model(model, "profiles/my-model.h5")             # a transformers Llama model

Importing the package loads its op library (libxattn_ops.so, installed beside this file by
``pip install .``; XATTN_OPS=path overrides), which registers torch.ops.xattn.*. Modules:

* ``xattn.ops``: typed wrappers over torch.ops.xattn.* (scale, return_lse, thresholds as a
  tensor, a list or a profile layer);
* ``xattn.profile``: ``load_profile`` and its checks (those of the C++ reader);
* ``xattn.sparse``: the selection as a FlexAttention BlockMask or block CSR (FlashInfer's BSR);
* ``xattn.capture``: the capture writer for ``xattn calibrate --capture`` (needs h5py);
* ``xattn.transformers_adapter``: ``patch_model`` for transformers models.
"""

__version__ = "0.1.0"

from . import _library

_library.load()

from . import cost_model, ops, sparse  # noqa: E402
from .profile import (Profile, ProfileError, ProfileLayer, ProfileMismatchError,  # noqa: E402
                      load_profile)
from .sparse import to_block_mask, to_bsr, to_sparse_bsr  # noqa: E402
from .transformers_adapter import patch_model  # noqa: E402


def __getattr__(name):
    # xattn.capture imports numpy and h5py: loaded on first use.
    if name == "capture":
        import importlib

        return importlib.import_module(".capture", __name__)
    raise AttributeError(f"module 'xattn' has no attribute {name!r}")


__all__ = ["Profile", "ProfileError", "ProfileLayer", "ProfileMismatchError", "cost_model",
           "load_profile", "ops", "patch_model", "sparse", "to_block_mask", "to_bsr",
           "to_sparse_bsr", "__version__"]
