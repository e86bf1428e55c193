"""Run a Hugging Face transformers Llama model with XAttention prefill and a calibrated profile.

    import xattn_transformers
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16).cuda()
    runtime = xattn_transformers.patch_model(
        model, "profile.json",                         # from `xattn profile export --json`
        ops_library="build/runtime/libxattn_ops.so", model_dir=model_dir)
    model.generate(...)
    print(runtime.summary())                           # which calls ran sparse, which dense, why

``patch_model`` checks the profile against ``model.config`` (layers, query and key-value heads,
head size, architecture; with ``model_dir`` also the config.json hash), loads the op library,
registers the attention function "xattn" through transformers' ``AttentionInterface``
(transformers >= 4.48) and switches the model to it. Each attention call then runs
``torch.ops.xattn.prefill(q, k, v, thresholds[layer], stride, block_size, causal,
dense_last_query_block)`` with the profile's kernel settings, or transformers' sdpa attention, explicitly and countably, for:

* decode steps (one query token);
* key lengths below ``crossover_len``: by default 8192 on CUDA, where dense attention is as fast
  (docs/benchmarks.md), and 0 on CPU (the CPU path is the reference, always sparse);
* padded batches (a masked key in the last query row), non-default softmax scale, dropout
  in training mode and sliding-window layers, which the op does not implement.

transformers and torch are imported inside the functions: the module imports without them.
"""

import json
import math
import os

DEFAULT_OPS_LIBRARY = os.path.join("build", "runtime", "libxattn_ops.so")
CUDA_CROSSOVER_LEN = 8192  # key length below which dense attention wins on an H200
ATTENTION_NAME = "xattn"


class ProfileMismatchError(ValueError):
    """The profile was calibrated for another model or kernel; the message lists every field."""


class XAttentionProfile:
    """The parts of an exported profile (docs/profile-format.md, JSON) that inference needs."""

    def __init__(self, data, source="<profile>"):
        try:
            if data["format"] != "xattn-profile":
                raise ValueError(f"format is {data['format']!r}, not 'xattn-profile'")
            if data["format_version"]["major"] != 1:
                raise ValueError(f"format version {data['format_version']['major']}.x is not "
                                 "readable by this module (reads 1.x)")
            model, kernel = data["model"], data["kernel"]
            self.architecture = str(model["architecture"])
            self.num_layers = int(model["num_layers"])
            self.heads_q = int(model["heads_q"])
            self.heads_kv = int(model["heads_kv"])
            self.head_dim = int(model["head_dim"])
            self.config_hash = str(model.get("config_hash") or "")
            self.block_size = int(kernel["block_size"])
            self.stride = int(kernel["stride"])
            self.causal = bool(kernel["causal"])
            # Profiles before format 1.2 selected the last query block like the others.
            self.dense_last_query_block = bool(kernel.get("dense_last_query_block", False))
            self.thresholds = [[float(t) for t in row] for row in data["thresholds"]]
        except (KeyError, TypeError, ValueError) as problem:
            raise ValueError(f"{source}: not a usable xattn profile JSON ({problem}); export one "
                             "with `xattn profile export --json OUT PROFILE.h5`") from None
        shape_ok = (len(self.thresholds) == self.num_layers
                    and all(len(row) == self.heads_q for row in self.thresholds))
        if not shape_ok:
            raise ValueError(f"{source}: thresholds must be [{self.num_layers}][{self.heads_q}] "
                             "(layers x query heads)")
        self.source = source

    @classmethod
    def from_json(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f), source=os.fspath(path))


def fnv1a64(data):
    """The hash `xattn calibrate` stores for config.json ("fnv1a64:<16 hex digits>")."""
    value = 1469598103934665603
    for byte in data:
        value = ((value ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"fnv1a64:{value:016x}"


def model_signature(config):
    """(architecture, num_layers, heads_q, heads_kv, head_dim) of a transformers config."""
    heads_q = int(config.num_attention_heads)
    heads_kv = int(getattr(config, "num_key_value_heads", None) or heads_q)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads_q
    return (str(getattr(config, "model_type", "")), int(config.num_hidden_layers), heads_q,
            heads_kv, int(head_dim))


def check_profile_matches(profile, config, model_dir=None):
    """Raises ProfileMismatchError naming every field where profile and model differ."""
    architecture, num_layers, heads_q, heads_kv, head_dim = model_signature(config)
    differences = []
    if profile.architecture and architecture and profile.architecture != architecture:
        differences.append(f"architecture: profile {profile.architecture}, model {architecture}")
    for name, have, want in (("layers", profile.num_layers, num_layers),
                             ("query heads", profile.heads_q, heads_q),
                             ("key-value heads", profile.heads_kv, heads_kv),
                             ("head_dim", profile.head_dim, head_dim)):
        if have != want:
            differences.append(f"{name}: profile {have}, model {want}")
    if model_dir is not None and profile.config_hash.startswith("fnv1a64:"):
        with open(os.path.join(model_dir, "config.json"), "rb") as f:
            model_hash = fnv1a64(f.read())
        if model_hash != profile.config_hash:
            differences.append(f"config.json hash: profile {profile.config_hash}, "
                               f"model {model_hash}")
    if differences:
        raise ProfileMismatchError(
            f"profile {profile.source} does not match the model: " + "; ".join(differences)
            + ". Calibrate this model (`xattn calibrate`) or load the profile made for it.")


def load_ops(library_path=DEFAULT_OPS_LIBRARY):
    """Loads libxattn_ops.so once; afterwards torch.ops.xattn.prefill exists."""
    import torch

    if not os.path.exists(library_path):
        raise FileNotFoundError(f"{library_path}: op library not found; build it with "
                                "`cmake --build build --target xattn_ops` or pass its path")
    torch.ops.load_library(library_path)
    return torch.ops.xattn


def _sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _mask_hides_keys(attention_mask, key_len):
    """True when the last query row masks a key: a padded batch item (the op has no mask)."""
    import torch

    if attention_mask is None:
        return False
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() not in (2, 4):
        return True  # an unfamiliar mask type: do not guess
    if attention_mask.dim() == 2:  # the tokenizer's padding mask [b, Lk], 1 = token
        return bool((attention_mask[:, -key_len:] == 0).any())
    last_row = attention_mask[:, :, -1, :key_len]  # an sdpa mask [b, 1|H, Lq, Lk]
    if last_row.dtype == torch.bool:
        return not bool(last_row.all())
    return bool((last_row != 0).any())


class XAttentionRuntime:
    """Per-model state the "xattn" attention function reads: profile, policy, counters."""

    def __init__(self, profile, crossover_len=None, dense_attention=None):
        self.profile = profile
        self.crossover_len = crossover_len  # None: CUDA_CROSSOVER_LEN on CUDA, 0 elsewhere
        self.dense_attention = dense_attention or _sdpa_attention
        self.calls = {}  # "sparse" or "dense (<reason>)" -> count
        self._thresholds = {}  # (layer, device) -> float32 tensor [heads_q]

    def crossover_for(self, device):
        if self.crossover_len is not None:
            return self.crossover_len
        return CUDA_CROSSOVER_LEN if device.type == "cuda" else 0

    def thresholds(self, layer, device):
        import torch

        cached = self._thresholds.get((layer, device))
        if cached is None:
            cached = torch.tensor(self.profile.thresholds[layer], dtype=torch.float32,
                                  device=device)
            self._thresholds[(layer, device)] = cached
        return cached

    def dense_reason(self, module, query, key, attention_mask, scaling, dropout, kwargs):
        """Why this call runs dense, or None when it runs XAttention."""
        query_len, key_len, head_dim = query.shape[2], key.shape[2], query.shape[3]
        if query_len == 1:
            return "decode"
        if key_len < self.crossover_for(query.device):
            return f"shorter than crossover {self.crossover_for(query.device)}"
        if scaling is not None and not math.isclose(scaling, head_dim ** -0.5, rel_tol=1e-6):
            return "non-default softmax scale"
        if dropout and module.training:
            return "dropout in training"
        if kwargs.get("sliding_window") is not None:
            return "sliding window"
        if _mask_hides_keys(attention_mask, key_len):
            return "padded batch"
        return None

    def count(self, what):
        self.calls[what] = self.calls.get(what, 0) + 1

    def summary(self):
        if not self.calls:
            return "xattn: no attention calls yet"
        parts = [f"{what}: {n}" for what, n in sorted(self.calls.items())]
        return "xattn attention calls - " + ", ".join(parts)


def xattn_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                    **kwargs):
    """transformers attention function: q [b, Hq, Lq, d], k/v [b, Hkv, Lk, d] (post-RoPE).

    Returns (output [b, Lq, Hq, d], None) like transformers' own attention functions.
    """
    import torch

    runtime = getattr(module, "_xattn_runtime", None)
    if runtime is None:
        raise RuntimeError(f"{type(module).__name__} uses attention 'xattn' but was not prepared "
                           "by xattn_transformers.patch_model(model, profile)")
    reason = runtime.dense_reason(module, query, key, attention_mask, scaling, dropout, kwargs)
    if reason is not None:
        runtime.count(f"dense ({reason})")
        return runtime.dense_attention(module, query, key, value, attention_mask,
                                       scaling=scaling, dropout=dropout, **kwargs)
    profile = runtime.profile
    output = torch.ops.xattn.prefill(
        query.contiguous(), key.contiguous(), value.contiguous(),
        runtime.thresholds(module.layer_idx, query.device), profile.stride, profile.block_size,
        profile.causal, profile.dense_last_query_block)
    runtime.count("sparse")
    return output.transpose(1, 2).contiguous(), None


def _register_sdpa_masks():
    """Builds masks for "xattn" as for sdpa (None for plain causal prefill).

    transformers >= 4.53 build masks per attention name and hand an unknown name the raw 2D
    padding mask; sdpa's masks are what the dense fallback needs.
    """
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:  # older transformers: 4D masks for every attention function
        return
    AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _attention_modules(model):
    return [m for m in model.modules()
            if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


def patch_model(model, profile, ops_library=DEFAULT_OPS_LIBRARY, crossover_len=None,
                model_dir=None, dense_attention=None):
    """Switches a transformers Llama model to XAttention prefill with a profile.

    profile: a path to `xattn profile export --json` output, or an XAttentionProfile.
    crossover_len: key length below which attention stays dense (default: 8192 on CUDA, 0 on
    CPU). model_dir: the model folder, to compare the config.json hash too.
    Returns the XAttentionRuntime (its ``summary()`` counts sparse and dense calls).
    """
    if not isinstance(profile, XAttentionProfile):
        profile = XAttentionProfile.from_json(profile)
    check_profile_matches(profile, model.config, model_dir)
    modules = _attention_modules(model)
    layer_indices = sorted(int(m.layer_idx) for m in modules)
    if layer_indices != list(range(profile.num_layers)):
        raise ProfileMismatchError(
            f"found attention modules for layers {layer_indices}, expected "
            f"0..{profile.num_layers - 1}; patch_model supports Llama-style models whose attention modules carry layer_idx")
    for module in modules:
        if bool(getattr(module, "is_causal", True)) != profile.causal:
            raise ProfileMismatchError(
                f"profile {profile.source} was calibrated with causal={profile.causal} but layer "
                f"{module.layer_idx} has is_causal={module.is_causal}")
    load_ops(ops_library)

    from transformers import AttentionInterface

    runtime = XAttentionRuntime(profile, crossover_len, dense_attention)
    for module in modules:
        module._xattn_runtime = runtime
    AttentionInterface.register(ATTENTION_NAME, xattn_attention)
    _register_sdpa_masks()
    if hasattr(model, "set_attn_implementation"):  # newer transformers
        model.set_attn_implementation(ATTENTION_NAME)
    else:  # 4.48 to 4.5x read config._attn_implementation at every call
        model.config._attn_implementation = ATTENTION_NAME
    return runtime
