"""Run a Hugging Face transformers Llama model with XAttention prefill and a calibrated profile.

    import xattn
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16).cuda()
    runtime = xattn.patch_model(model, "profiles/my-model.h5", model_dir=model_dir)
    model.generate(...)
    print(runtime.summary())                           # which calls ran sparse, which dense, why

``patch_model`` reads the profile (HDF5 or its JSON export, ``xattn.load_profile``), checks it
against ``model.config`` (layers, query and key-value heads, head size, architecture; with
``model_dir`` also the config.json hash), registers the attention function "xattn" through
transformers' ``AttentionInterface`` (transformers >= 4.48) and switches the model to it. Each
attention call then runs ``torch.ops.xattn.prefill(q, k, v, thresholds[layer], stride,
block_size, causal, dense_last_query_block, scale)`` with the profile's kernel settings and the
module's softmax scale, or transformers' sdpa attention, explicitly and countably, for:

* decode steps (one query token);
* key lengths below ``crossover_len``: by default 8192 on CUDA, where dense attention is as fast
  (docs/benchmarks.md), and 0 on CPU (the CPU path is the reference, always sparse);
* calls where the cost model predicts dense attention cheaper than estimate + sparse at the
  layer's predicted density for this key length (``xattn.cost_model``, the C++ engine's rule):
  on CUDA with the device's built-in cost table unless ``cost_table`` gives one (a dict or the
  JSON file ``xattn_cost_table`` writes), plus ``sparse_host_ms`` on the sparse side (the host
  time the op's call costs beyond sdpa's, which a forward pass bound by the host pays);
  ``force_sparse=True`` turns the rule off;
  ``runtime.decisions[layer]`` holds the last verdict in words;
* padded batches (a masked key in the last query row), dropout in training mode and
  sliding-window layers, which the op does not implement.

transformers is imported inside the functions: the module imports without it.
"""

# fnv1a64, model_signature and ProfileMismatchError are re-exported for callers of the former
# examples/python/xattn_transformers.py.
from . import cost_model
from .profile import (Profile, ProfileMismatchError, check_profile_matches, fnv1a64,  # noqa: F401
                      load_profile, model_signature)

CUDA_CROSSOVER_LEN = 8192  # key length below which dense attention wins on an H200
# Host time of one torch.ops.xattn.prefill call beyond one sdpa call, as this adapter makes them
# (q/k/v made contiguous, output transposed back): 85-150 us at 8K-32K on the H200 machine
# (bench/op_overhead.py, bench/results/h200-e2e-speed/op_overhead.txt). The 6-layer bundled model's
# forward pass is bound by the host up to 16K, so this time adds to the prefill there.
SPARSE_HOST_MS = 0.1
ATTENTION_NAME = "xattn"


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

    def __init__(self, profile, crossover_len=None, dense_attention=None, cost_table=None,
                 force_sparse=False, sparse_host_ms=SPARSE_HOST_MS):
        self.profile = profile
        self.crossover_len = crossover_len  # None: CUDA_CROSSOVER_LEN on CUDA, 0 elsewhere
        self.dense_attention = dense_attention or _sdpa_attention
        if cost_table is not None and not isinstance(cost_table, dict):
            cost_table = cost_model.load_cost_table(cost_table)
        self.cost_table = cost_table  # None: the CUDA device's built-in table, none on CPU
        self.force_sparse = force_sparse
        if not (isinstance(sparse_host_ms, (int, float)) and 0 <= sparse_host_ms < 1e3):
            raise ValueError(f"sparse_host_ms is {sparse_host_ms!r}; pass the host time of a "
                             "sparse call beyond a dense one in ms, >= 0 (default "
                             f"{SPARSE_HOST_MS})")
        self.sparse_host_ms = float(sparse_host_ms)
        self.density = cost_model.DensityModel.of_profile(profile)
        self.calls = {}  # "sparse" or "dense (<reason>)" -> count
        self.decisions = {}  # layer -> the cost rule's last verdict in words
        self._thresholds = {}  # (layer, device) -> float32 tensor [heads_q]
        self._device_tables = {}

    def table_for(self, device):
        """The cost table for tensors on ``device``, or None (no cost rule)."""
        if self.cost_table is not None:
            return self.cost_table
        if device.type != "cuda":
            return None
        if device not in self._device_tables:
            import torch

            self._device_tables[device] = cost_model.builtin_cost_table(
                torch.cuda.get_device_name(device))
        return self._device_tables[device]

    def crossover_for(self, device):
        if self.crossover_len is not None:
            return self.crossover_len
        return CUDA_CROSSOVER_LEN if device.type == "cuda" else 0

    def thresholds(self, layer, device):
        """A layer's τ as the op takes them. Eager: a CPU tensor, which the op reads on the
        host and copies to the GPU without waiting (τ on the GPU would make every layer wait
        for it to be read back). Under torch.compile: on q's device, as fake tensors need."""
        import torch

        compiler = getattr(torch, "compiler", None)
        compiling = compiler is not None and hasattr(compiler, "is_compiling") \
            and compiler.is_compiling()
        where = device if compiling else torch.device("cpu")
        cached = self._thresholds.get((layer, where))
        if cached is None:
            cached = torch.tensor(self.profile.thresholds[layer], dtype=torch.float32,
                                  device=where)
            self._thresholds[(layer, where)] = cached
        return cached

    def dense_reason(self, module, query, key, attention_mask, scaling, dropout, kwargs):
        """Why this call runs dense, or None when it runs XAttention."""
        query_len, key_len = query.shape[2], key.shape[2]
        if query_len == 1:
            return "decode"
        if key_len < self.crossover_for(query.device):
            return f"shorter than crossover {self.crossover_for(query.device)}"
        if dropout and module.training:
            return "dropout in training"
        if kwargs.get("sliding_window") is not None:
            return "sliding window"
        if _mask_hides_keys(attention_mask, key_len):
            return "padded batch"
        table = None if self.force_sparse else self.table_for(query.device)
        if table is not None:
            profile = self.profile
            sparse, why = cost_model.decide(
                table, self.density, module.layer_idx, query_len, key_len, query.shape[1],
                query.shape[3], profile.block_size, profile.stride, profile.causal,
                host_ms=self.sparse_host_ms)
            self.decisions[module.layer_idx] = why
            if not sparse:
                return "predicted slower than dense"
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
                           "by xattn.patch_model(model, profile)")
    reason = runtime.dense_reason(module, query, key, attention_mask, scaling, dropout, kwargs)
    if reason is not None:
        runtime.count(f"dense ({reason})")
        return runtime.dense_attention(module, query, key, value, attention_mask,
                                       scaling=scaling, dropout=dropout, **kwargs)
    profile = runtime.profile
    scale = None if scaling is None else float(scaling)
    output = torch.ops.xattn.prefill(
        query.contiguous(), key.contiguous(), value.contiguous(),
        runtime.thresholds(module.layer_idx, query.device), profile.stride, profile.block_size,
        profile.causal, profile.dense_last_query_block, scale)
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


def patch_model(model, profile, crossover_len=None, model_dir=None, dense_attention=None,
                cost_table=None, force_sparse=False, sparse_host_ms=SPARSE_HOST_MS):
    """Switches a transformers Llama model to XAttention prefill with a profile.

    profile: a path to a profile (HDF5 or its JSON export) or a ``xattn.Profile``.
    crossover_len: key length below which attention stays dense (default:
    8192 on CUDA, 0 on CPU). model_dir: the model folder, to compare the config.json hash too.
    cost_table: the density-aware dispatch's costs (a dict or a JSON file; default: the CUDA
    device's built-in table, none on CPU). force_sparse: never dense by the cost rule.
    sparse_host_ms: host time of a sparse call beyond a dense one, charged to the sparse side
    (default SPARSE_HOST_MS, measured on the H200 machine; 0 where the forward is GPU-bound).
    Returns the XAttentionRuntime (its ``summary()`` counts sparse and dense calls).
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    check_profile_matches(profile, model.config, model_dir)
    modules = _attention_modules(model)
    layer_indices = sorted(int(m.layer_idx) for m in modules)
    if layer_indices != list(range(profile.num_layers)):
        raise ProfileMismatchError(
            f"found attention modules for layers {layer_indices}, expected "
            f"0..{profile.num_layers - 1}; patch_model supports Llama-style models whose "
            "attention modules carry layer_idx")
    for module in modules:
        if bool(getattr(module, "is_causal", True)) != profile.causal:
            raise ProfileMismatchError(
                f"profile {profile.source} was calibrated with causal={profile.causal} but layer "
                f"{module.layer_idx} has is_causal={module.is_causal}")
    from transformers import AttentionInterface

    runtime = XAttentionRuntime(profile, crossover_len, dense_attention, cost_table, force_sparse,
                                sparse_host_ms)
    for module in modules:
        module._xattn_runtime = runtime
    AttentionInterface.register(ATTENTION_NAME, xattn_attention)
    _register_sdpa_masks()
    if hasattr(model, "set_attn_implementation"):  # newer transformers
        model.set_attn_implementation(ATTENTION_NAME)
    else:  # 4.48 to 4.5x read config._attn_implementation at every call
        model.config._attn_implementation = ATTENTION_NAME
    return runtime
