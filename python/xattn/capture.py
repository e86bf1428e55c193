"""Write xattn captures (docs/capture-format.md) from PyTorch.

For models and frameworks the C++ model runner does not cover: record the post-RoPE q, k, v of
some layers while the model runs, then give the file to `xattn estimate --capture FILE` or
`xattn calibrate --capture FILE`.

Three ways in:

* ``CaptureWriter``: write layers yourself (torch tensors or numpy arrays).
* ``TransformersCaptureHook``: a Hugging Face transformers attention function (transformers >= 4.48,
  ``AttentionInterface``) that records every layer's q/k/v and then runs the usual sdpa attention,
  so the model's outputs do not change.
* ``video_capture`` + ``CaptureWriter.record``: for video diffusion transformers (non-causal),
  one call placed in your attention processor; frames/height/width are stored as attributes.

Needs h5py and numpy (imported on first use of `xattn.capture`); transformers only for the hook.
"""

import itertools
import os
import stat

import numpy as np

FORMAT_NAME = "xattn-capture"
FORMAT_VERSION = (1, 0)

_temp_counter = itertools.count()


class CaptureError(ValueError):
    """A capture cannot be written as asked; the message says what to change."""


def _to_numpy(tensor, name):
    """Returns (array as stored in HDF5, dtype name). bfloat16 becomes its raw uint16 bits."""
    if isinstance(tensor, np.ndarray):
        if tensor.dtype == np.float32:
            return np.ascontiguousarray(tensor), "float32"
        if tensor.dtype == np.float16:
            return np.ascontiguousarray(tensor), "float16"
        raise CaptureError(
            f"{name}: numpy dtype {tensor.dtype} is not supported; use float32 or float16 "
            "(for bfloat16 pass the torch tensor)")
    import torch  # only needed for torch inputs

    if not isinstance(tensor, torch.Tensor):
        raise CaptureError(f"{name}: expected a torch.Tensor or numpy array, got {type(tensor)}")
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.float32:
        return t.numpy(), "float32"
    if t.dtype == torch.float16:
        return t.numpy(), "float16"
    if t.dtype == torch.bfloat16:
        # Raw bits: an integer dataset, so no reader converts it as if it were float16.
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    raise CaptureError(
        f"{name}: dtype {t.dtype} is not supported; use float32, float16 or bfloat16")


def _check_target(path, overwrite):
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise CaptureError(f"{path}: exists and is not a regular file; choose another path")
        if not overwrite:
            raise FileExistsError(
                f"{path}: already exists; pass overwrite=True to replace it")


class CaptureWriter:
    """Writes one capture file atomically.

    Layers go to a hidden temporary file beside ``path`` as they arrive (nothing is held in
    memory); ``commit()`` writes the root attributes and moves the file into place. Without
    ``commit()`` (an exception inside ``with``, or ``abort()``) the temporary file is removed and
    an existing ``path`` is left untouched. An existing ``path`` is refused unless
    ``overwrite=True``.

    Shapes: q ``[batch, heads_q, len_q, head_dim]``, k and v ``[batch, heads_kv, len_k, head_dim]``,
    the same in every layer; one element type (float32, float16 or bfloat16) for all of them.
    ``len_q`` / ``len_k``: valid tokens per batch item when items are right-padded (default: the
    full length for every item).
    """

    def __init__(self, path, *, model_name, num_layers, causal=True, description="",
                 source="python-hook", len_q=None, len_k=None, position_offset=None,
                 video=None, overwrite=False):
        import h5py  # imported here so the module can be read without it

        if num_layers <= 0:
            raise CaptureError(f"num_layers must be positive, got {num_layers}")
        if video is not None and (len(video) != 3 or min(video) <= 0):
            raise CaptureError(f"video must be (frames, height, width), all positive; got {video}")
        self.path = os.fspath(path)
        self.overwrite = overwrite
        _check_target(self.path, overwrite)

        self._root_attrs = {
            "model_name": str(model_name), "source": str(source),
            "description": str(description), "num_layers": int(num_layers),
            "causal": bool(causal),
        }
        self._len_q = None if len_q is None else [int(x) for x in len_q]
        self._len_k = None if len_k is None else [int(x) for x in len_k]
        self._position_offset = (None if position_offset is None
                                 else [int(x) for x in position_offset])
        self._video = None if video is None else tuple(int(x) for x in video)
        self._shape = None  # (batch, heads_q, heads_kv, head_dim, Lq, Lk, dtype, has_v)
        self._written = set()

        folder, name = os.path.split(os.path.abspath(self.path))
        self._temp_path = os.path.join(
            folder, f".{name}.tmp-{os.getpid()}-{next(_temp_counter)}")
        self._file = h5py.File(self._temp_path, "w-")

    # -- writing -----------------------------------------------------------------------------

    def write_layer(self, layer_index, q, k, v=None):
        """Stores one layer. Each layer index may be written once."""
        self._require_open()
        layer_index = int(layer_index)
        num_layers = self._root_attrs["num_layers"]
        if not 0 <= layer_index < num_layers:
            raise CaptureError(f"layer index {layer_index} is outside [0, {num_layers})")
        if layer_index in self._written:
            raise CaptureError(f"layer {layer_index} was already written to this capture")

        arrays = {"q": _to_numpy(q, "q"), "k": _to_numpy(k, "k")}
        if v is not None:
            arrays["v"] = _to_numpy(v, "v")
        shape = self._check_shapes(layer_index, arrays)
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise CaptureError(
                f"layer {layer_index}: shapes/dtype {self._describe(shape)} differ from the "
                f"first layer's {self._describe(self._shape)}; every layer must match")

        group = self._file.create_group(f"layers/{layer_index}")
        group.attrs["layer_index"] = np.int64(layer_index)
        for name, (array, dtype_name) in arrays.items():
            dataset = group.create_dataset(name, data=array)
            dataset.attrs["dtype"] = dtype_name
        self._written.add(layer_index)

    def record(self, layer_index, q, k, v=None):
        """Like write_layer, but later calls for an already recorded layer are ignored.

        Meant for attention processors that run many times (every denoising step, every
        generated token): the first call per layer is kept. Returns True when it recorded.
        """
        if int(layer_index) in self._written:
            return False
        self.write_layer(layer_index, q, k, v)
        return True

    @property
    def recorded_layers(self):
        return sorted(self._written)

    def commit(self):
        """Writes the root attributes and moves the file to ``path``."""
        self._require_open()
        try:
            self._write_root_attributes()
            self._file.close()
        except BaseException:
            self.abort()
            raise
        try:
            _check_target(self.path, self.overwrite)
            if self.overwrite:
                os.replace(self._temp_path, self.path)
            else:
                # A hard link fails if the target appeared meanwhile: no silent overwrite.
                os.link(self._temp_path, self.path)
                os.unlink(self._temp_path)
        except BaseException:
            self._remove_temp()
            raise
        self._file = None

    def abort(self):
        """Drops everything written so far; ``path`` is left as it was."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._remove_temp()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def __del__(self):
        if getattr(self, "_file", None) is not None:
            self.abort()

    # -- helpers -----------------------------------------------------------------------------

    def _require_open(self):
        if self._file is None:
            raise CaptureError(f"{self.path}: the capture was already committed or aborted")

    def _remove_temp(self):
        if os.path.exists(self._temp_path):
            os.unlink(self._temp_path)

    @staticmethod
    def _describe(shape):
        batch, hq, hkv, d, lq, lk, dtype, has_v = shape
        return (f"(batch {batch}, heads {hq}/{hkv}, head_dim {d}, len_q {lq}, len_k {lk}, "
                f"{dtype}, {'with' if has_v else 'without'} v)")

    def _check_shapes(self, layer_index, arrays):
        q, q_dtype = arrays["q"]
        k, k_dtype = arrays["k"]
        where = f"layer {layer_index}"
        if q.ndim != 4 or k.ndim != 4:
            raise CaptureError(
                f"{where}: q and k must be 4-D [batch, heads, len, head_dim]; got q {q.shape}, "
                f"k {k.shape} (transpose [batch, len, heads, head_dim] with .transpose(1, 2))")
        batch, heads_q, len_q, head_dim = q.shape
        if k.shape[0] != batch or k.shape[3] != head_dim:
            raise CaptureError(f"{where}: k {k.shape} does not fit q {q.shape} "
                               "(batch and head_dim must agree)")
        heads_kv, len_k = k.shape[1], k.shape[2]
        if heads_kv == 0 or heads_q % heads_kv != 0:
            raise CaptureError(f"{where}: heads_q {heads_q} is not a multiple of heads_kv "
                               f"{heads_kv}")
        if len_q > len_k:
            raise CaptureError(f"{where}: len_q {len_q} exceeds len_k {len_k}")
        dtypes = {q_dtype, k_dtype}
        if "v" in arrays:
            v, v_dtype = arrays["v"]
            if v.shape != k.shape:
                raise CaptureError(f"{where}: v {v.shape} must have k's shape {k.shape}")
            dtypes.add(v_dtype)
        if len(dtypes) != 1:
            raise CaptureError(f"{where}: q, k and v must share one dtype; got {sorted(dtypes)}")
        return (batch, heads_q, heads_kv, head_dim, len_q, len_k, q_dtype, "v" in arrays)

    def _write_root_attributes(self):
        if self._shape is None:
            raise CaptureError(f"{self.path}: no layer was recorded; nothing to write")
        batch, heads_q, heads_kv, head_dim, padded_q, padded_k, dtype, has_v = self._shape
        len_q = self._len_q if self._len_q is not None else [padded_q] * batch
        len_k = self._len_k if self._len_k is not None else [padded_k] * batch
        if len(len_q) != batch or len(len_k) != batch:
            raise CaptureError(f"len_q / len_k need {batch} entries (one per batch item); "
                               f"got {len(len_q)} and {len(len_k)}")
        for b, (lq, lk) in enumerate(zip(len_q, len_k)):
            if not (1 <= lq <= lk and lq <= padded_q and lk <= padded_k):
                raise CaptureError(
                    f"item {b}: need 1 <= len_q ({lq}) <= len_k ({lk}), len_q <= {padded_q} "
                    f"and len_k <= {padded_k}")
        if self._video is not None:
            frames, height, width = self._video
            if frames * height * width > padded_k:
                raise CaptureError(f"video grid {frames}x{height}x{width} = "
                                   f"{frames * height * width} tokens exceeds len_k {padded_k}")

        attrs = self._file.attrs
        attrs["format"] = FORMAT_NAME
        attrs["format_version"] = np.array(FORMAT_VERSION, np.int64)
        attrs["model_name"] = self._root_attrs["model_name"]
        attrs["source"] = self._root_attrs["source"]
        attrs["description"] = self._root_attrs["description"]
        attrs["dtype"] = dtype
        attrs["num_layers"] = np.int64(self._root_attrs["num_layers"])
        attrs["heads_q"] = np.int64(heads_q)
        attrs["heads_kv"] = np.int64(heads_kv)
        attrs["head_dim"] = np.int64(head_dim)
        attrs["causal"] = np.uint8(self._root_attrs["causal"])
        attrs["has_v"] = np.uint8(has_v)
        attrs["len_q"] = np.array(len_q, np.int64)
        attrs["len_k"] = np.array(len_k, np.int64)
        if self._position_offset is not None:
            if len(self._position_offset) != batch:
                raise CaptureError(f"position_offset needs {batch} entries; "
                                   f"got {len(self._position_offset)}")
            attrs["position_offset"] = np.array(self._position_offset, np.int64)
        if self._video is not None:
            attrs["video_frames"] = np.int64(self._video[0])
            attrs["video_height"] = np.int64(self._video[1])
            attrs["video_width"] = np.int64(self._video[2])


def video_capture(path, *, model_name, num_layers, frames, height, width, description="",
                  overwrite=False):
    """A CaptureWriter for a video diffusion transformer: non-causal, with the token grid.

    Call ``writer.record(layer_index, q, k, v)`` in the attention processor with q
    ``[batch, heads, len, head_dim]`` (after rotary embedding, if the model uses one), and
    ``writer.commit()`` after the first denoising step. Video tokens are laid out frame by
    frame, row by row.
    """
    return CaptureWriter(path, model_name=model_name, num_layers=num_layers, causal=False,
                         description=description, video=(frames, height, width),
                         overwrite=overwrite)


class TransformersCaptureHook:
    """Records q/k/v of a Hugging Face transformers model through its attention interface.

        writer = CaptureWriter("cap.h5", model_name="llama-3.2-1b",
                               num_layers=model.config.num_hidden_layers)
        hook = TransformersCaptureHook(writer)
        hook.install(model)            # registers "xattn_capture" and switches the model to it
        with torch.no_grad():
            model(input_ids)           # one forward pass over the prompt
        hook.uninstall(model)          # back to the previous attention implementation
        writer.commit()

    The attention function receives post-RoPE q ``[b, Hq, L, d]`` and k/v ``[b, Hkv, L, d]``
    (k/v before GQA expansion), records the first call of each layer (``module.layer_idx``) in
    ``layers`` (default: all), and then runs transformers' sdpa attention, so outputs are
    unchanged. Later calls (decode steps of ``generate``) are not recorded.
    """

    NAME = "xattn_capture"

    def __init__(self, writer, layers=None, record_v=True):
        self.writer = writer
        self.layers = None if layers is None else {int(x) for x in layers}
        self.record_v = record_v
        self._previous = None

    def attention(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                  **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        layer_index = getattr(module, "layer_idx", None)
        if layer_index is None:
            raise CaptureError(f"{type(module).__name__} has no layer_idx; record q/k/v with "
                               "CaptureWriter.record in your own attention code instead")
        if self.layers is None or int(layer_index) in self.layers:
            self.writer.record(layer_index, query, key, value if self.record_v else None)
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)

    def install(self, model):
        from transformers import AttentionInterface

        AttentionInterface.register(self.NAME, self.attention)
        _register_sdpa_masks(self.NAME)
        self._previous = model.config._attn_implementation
        _set_attention_implementation(model, self.NAME)

    def uninstall(self, model):
        if self._previous is not None:
            _set_attention_implementation(model, self._previous)
            self._previous = None


def _register_sdpa_masks(name):
    # transformers >= 4.53 build masks per attention name and hand an unknown name the raw 2D
    # padding mask; the hook calls sdpa attention, so it gets sdpa's masks.
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:  # older transformers: 4D masks for every attention function
        return
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _set_attention_implementation(model, name):
    # Newer transformers validate and propagate through set_attn_implementation; the models of
    # 4.48 to 4.5x read config._attn_implementation at every forward call.
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name
