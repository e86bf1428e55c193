"""Calibration profiles (docs/profile-format.md) read in Python: HDF5 with h5py, or the JSON that
`xattn profile export --json` writes.

    profile = xattn.load_profile("profiles/xattn-byte.h5")
    profile.thresholds[layer]          # [heads_q] floats, one τ per query head
    profile.layer(layer)               # a ProfileLayer: thresholds plus the kernel settings

Checks are those of the C++ reader (runtime/io/src/profile.cpp: parse_profile, validate_profile):
every required field present with its type class (string, integer, float), arrays of the right
shape, values in range. A failure raises ProfileError with one line naming the file and the field,
e.g. ``profile p.h5: field /model/heads_kv is missing; the file is incomplete, recalibrate``.
Unknown extra groups, datasets and attributes are ignored; a newer minor version reads, another
major version is refused.
"""

import json
import math
import os
import struct

FORMAT_TAG = "xattn-profile"
FORMAT_MAJOR = 1
FORMAT_MINOR = 5


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file, the field and the fix."""


class ProfileMismatchError(ValueError):
    """The profile was calibrated for another model or kernel; the message lists every field."""


class ProfileLayer:
    """One layer's thresholds with the kernel settings they were calibrated with.

    Accepted wherever the ops take thresholds (xattn.ops.prefill(q, k, v, profile.layer(3))); the
    stride, block size, causal flag, dense_last_query_block and the layer's sliding window
    (``window``, 0: none; format 1.5) then default to the profile's.
    """

    def __init__(self, profile, index):
        self.index = index
        self.thresholds = list(profile.thresholds[index])
        self.stride = profile.stride
        self.block_size = profile.block_size
        self.causal = profile.causal
        self.dense_last_query_block = profile.dense_last_query_block
        windows = profile.layer_windows
        self.window = windows[index] if windows else 0
        self.source = profile.source

    def __len__(self):
        return len(self.thresholds)

    def __repr__(self):
        return (f"ProfileLayer({self.source}, layer {self.index}, {len(self.thresholds)} heads, "
                f"stride {self.stride}, block_size {self.block_size})")


class Profile:
    """Every field of a profile, validated. Matrices are lists of rows [layer][head]."""

    def __init__(self, fields, source="<profile>"):
        self.source = os.fspath(source)
        self.__dict__.update(fields)
        _validate(self)

    @classmethod
    def from_json_dict(cls, data, source="<profile>"):
        """A profile from the object `xattn profile export --json` writes (already parsed)."""
        return cls(_from_json(data, os.fspath(source)), source=source)

    # Kernel and model settings under the names the rest of the package uses.
    @property
    def num_layers(self):
        return self.model["num_layers"]

    @property
    def heads_q(self):
        return self.model["heads_q"]

    @property
    def heads_kv(self):
        return self.model["heads_kv"]

    @property
    def head_dim(self):
        return self.model["head_dim"]

    @property
    def architecture(self):
        return self.model["architecture"]

    @property
    def config_hash(self):
        return self.model["config_hash"]

    @property
    def block_size(self):
        return self.kernel["block_size"]

    @property
    def stride(self):
        return self.kernel["stride"]

    @property
    def causal(self):
        return self.kernel["causal"]

    @property
    def dense_last_query_block(self):
        return self.kernel["dense_last_query_block"]

    @property
    def scale_rule(self):
        return self.kernel["scale_rule"]

    @property
    def layer_windows(self):
        """Each layer's sliding window (0: none); [] when no layer has one (and before 1.5)."""
        return self.kernel.get("layer_windows", [])

    def layer(self, index):
        """The thresholds of layer ``index`` with the kernel settings (a ProfileLayer)."""
        if not 0 <= index < self.num_layers:
            raise IndexError(f"profile {self.source} has layers 0..{self.num_layers - 1}, "
                             f"not {index}")
        return ProfileLayer(self, index)

    def thresholds_tensor(self, device=None):
        """The thresholds as a float32 tensor [num_layers, heads_q]."""
        import torch

        return torch.tensor(self.thresholds, dtype=torch.float32, device=device)

    def __repr__(self):
        return (f"Profile({self.source}: {self.architecture}, {self.num_layers} layers x "
                f"{self.heads_q} heads, block_size {self.block_size}, stride {self.stride})")


def load_profile(path):
    """Reads and validates a profile: HDF5 (what `xattn calibrate` writes) or its JSON export.

    The kind is told by the file's first bytes, not its name. Raises ProfileError (one line:
    file, field, fix) or OSError when the file cannot be read.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"profile {path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"profile {path} is a folder; give the file itself")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return Profile(_read_hdf5(path), source=path)
    if head.lstrip()[:1] == b"{":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as problem:
                raise ProfileError(f"profile {path}: not valid JSON ({problem}); export one "
                                   "with `xattn profile export --json OUT PROFILE.h5`") from None
        return Profile(_from_json(data, path), source=path)
    raise ProfileError(f"{path} is not an HDF5 file (or its header is damaged) nor a JSON "
                       "export; expected an xattn profile")


# --- HDF5 ---------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one file; every failure names the field, as the C++ reader does."""

    def __init__(self, path):
        import h5py

        self.h5py = h5py
        self.path = path

    def fail(self, field, what):
        raise ProfileError(f"profile {self.path}: field {field} {what}")

    def _attribute(self, obj, where, name, type_class, kind):
        field = f"{where}/{name}"
        if name not in obj.attrs:
            self.fail(field, "is missing; the file is incomplete, recalibrate")
        attr_id = obj.attrs.get_id(name)
        if attr_id.get_type().get_class() != type_class:
            self.fail(field, f"must be {kind}")
        shape = attr_id.shape
        if shape is None or math.prod(shape) != 1:
            self.fail(field, "must be a single value")
        value = obj.attrs[name]
        return value.reshape(-1)[0] if hasattr(value, "reshape") else value

    def string(self, obj, where, name):
        value = self._attribute(obj, where, name, self.h5py.h5t.STRING, "a string")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def integer(self, obj, where, name):
        return int(self._attribute(obj, where, name, self.h5py.h5t.INTEGER, "an integer"))

    def real(self, obj, where, name):
        return float(self._attribute(obj, where, name, self.h5py.h5t.FLOAT,
                                     "a floating-point number"))

    def group(self, parent, where, name):
        field = f"{where}/{name}"
        if name not in parent:
            self.fail(field, "is missing; the file is incomplete, recalibrate")
        child = parent.get(name)
        if not isinstance(child, self.h5py.Group):
            self.fail(field, "must be a group")
        return child

    def array(self, parent, where, name, shape, type_class):
        """A dataset of exactly ``shape`` (None: any 1-D length) holding type_class numbers."""
        field = f"{where}/{name}"
        if name not in parent:
            self.fail(field, "is missing; the file is incomplete, recalibrate")
        dataset = parent.get(name)
        if not isinstance(dataset, self.h5py.Dataset):
            self.fail(field, "must be a dataset")
        if shape is None:
            if dataset.shape is None or len(dataset.shape) != 1:
                self.fail(field, "must be one-dimensional")
            shape = dataset.shape
        if dataset.id.get_type().get_class() != type_class:
            self.fail(field, "must hold floating-point numbers"
                      if type_class == self.h5py.h5t.FLOAT else "must hold integers")
        actual = tuple(dataset.shape or ())
        if actual != tuple(shape):
            self.fail(field, f"has shape {_shape(actual)}, expected {_shape(shape)}")
        values = dataset[()]
        return values.tolist() if hasattr(values, "tolist") else list(values)


def _shape(dims):
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _read_hdf5(path):
    import h5py

    rd = _Reader(path)
    if not h5py.is_hdf5(path):
        raise ProfileError(f"{path} is not an HDF5 file (or its header is damaged); expected an "
                           "xattn profile")
    try:
        with h5py.File(path, "r") as root:
            return _parse(rd, root)
    except ProfileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as problem:
        raise ProfileError(f"cannot read profile {path}: HDF5 failed ({problem}); the file is "
                           "damaged or truncated") from None


def _parse(rd, root):
    h5py = rd.h5py
    FLOAT, INTEGER = h5py.h5t.FLOAT, h5py.h5t.INTEGER
    path = rd.path
    tag = None
    if "format" in root.attrs:
        try:
            tag = rd.string(root, "", "format")
        except ProfileError:
            tag = None
    if tag != FORMAT_TAG:
        raise ProfileError(f"{path} is not an xattn profile (its root attribute 'format' is not "
                           f"'{FORMAT_TAG}')")
    major = rd.integer(root, "", "format_major")
    minor = rd.integer(root, "", "format_minor")
    if major != FORMAT_MAJOR:
        raise ProfileError(f"profile {path} has format version {major}.{minor}; this xattn "
                           f"reads major version {FORMAT_MAJOR} only: use a matching xattn, or "
                           "recalibrate")
    f = {"format_major": major, "format_minor": minor,
         "tool_version": rd.string(root, "", "tool_version"),
         "created_utc": rd.string(root, "", "created_utc")}

    model = rd.group(root, "", "model")
    f["model"] = {
        "architecture": rd.string(model, "/model", "architecture"),
        "num_layers": rd.integer(model, "/model", "num_layers"),
        "heads_q": rd.integer(model, "/model", "heads_q"),
        "heads_kv": rd.integer(model, "/model", "heads_kv"),
        "head_dim": rd.integer(model, "/model", "head_dim"),
        "config_hash": rd.string(model, "/model", "config_hash"),
        "weight_shapes_hash": rd.string(model, "/model", "weight_shapes_hash"),
    }
    layers, heads = f["model"]["num_layers"], f["model"]["heads_q"]
    if layers <= 0 or heads <= 0:
        rd.fail("/model/num_layers and /model/heads_q", "must be > 0")

    kernel = rd.group(root, "", "kernel")
    f["kernel"] = {
        "block_size": rd.integer(kernel, "/kernel", "block_size"),
        "stride": rd.integer(kernel, "/kernel", "stride"),
        "scale_rule": rd.string(kernel, "/kernel", "scale_rule"),
        "causal": rd.integer(kernel, "/kernel", "causal") != 0,
        # Before 1.2 the last query block was selected like the others.
        "dense_last_query_block": ("dense_last_query_block" in kernel.attrs and rd.integer(
            kernel, "/kernel", "dense_last_query_block") != 0),
    }
    # Before 1.5 no window was recorded: none. Like the JSON export, the kernel dict holds
    # layer_windows only when the file does.
    if "layer_windows" in kernel:
        f["kernel"]["layer_windows"] = rd.array(kernel, "/kernel", "layer_windows", (layers,),
                                                INTEGER)

    grid = (layers, heads)
    f["thresholds"] = rd.array(root, "", "thresholds", grid, FLOAT)
    predicted = rd.group(root, "", "predicted")
    f["predicted"] = {
        "density": rd.array(predicted, "/predicted", "density", grid, FLOAT),
        "error": rd.array(predicted, "/predicted", "error", grid, FLOAT),
        "mean_density": rd.real(predicted, "/predicted", "mean_density"),
        "mean_error": rd.real(predicted, "/predicted", "mean_error"),
    }

    budget = rd.group(root, "", "budget")
    f["budget"] = {
        "epsilon": rd.real(budget, "/budget", "epsilon"),
        "metric": rd.string(budget, "/budget", "metric"),
        "per_head_cap": (rd.real(budget, "/budget", "per_head_cap")
                         if "per_head_cap" in budget.attrs else None),
        "candidates": rd.array(budget, "/budget", "candidates", None, FLOAT),
    }

    f["uniform"] = None
    if "uniform" in root:
        uniform = rd.group(root, "", "uniform")
        f["uniform"] = {name: rd.real(uniform, "/uniform", name)
                        for name in ("tau", "density", "error")}
    f["validation"] = {}
    if "validation" in root:
        validation = rd.group(root, "", "validation")
        for name in validation.attrs:
            f["validation"][name] = rd.real(validation, "/validation", name)

    f["frontier"] = None
    if "frontier" in root:  # format 1.3
        frontier = rd.group(root, "", "frontier")
        f["frontier"] = {"holdout_tokens": rd.integer(frontier, "/frontier", "holdout_tokens")}
        for curve in ("uniform", "per_head"):
            where = f"/frontier/{curve}"
            g = rd.group(frontier, "/frontier", curve)
            parameter = rd.array(g, where, "parameter", None, FLOAT)
            columns = {}
            for column in ("parameter", "predicted_density", "density", "kl", "nll_increase"):
                values = rd.array(g, where, column, None, FLOAT)
                if len(values) != len(parameter):
                    rd.fail(f"{where}/{column}", "differs in length from parameter")
                if not all(math.isfinite(v) for v in values):
                    rd.fail(f"{where}/{column}", "holds a non-finite value")
                columns[column] = values
            f["frontier"][curve] = [dict(zip(columns, point)) for point in zip(*columns.values())]

    f["density_fit"] = None
    if "density_fit" in root:  # format 1.4
        fit = rd.group(root, "", "density_fit")
        f["density_fit"] = {
            "reference_len": rd.integer(fit, "/density_fit", "reference_len"),
            "density": rd.array(fit, "/density_fit", "density", (layers,), FLOAT),
            "exponent": rd.array(fit, "/density_fit", "exponent", (layers,), FLOAT),
            "lengths": rd.array(fit, "/density_fit", "lengths", None, INTEGER),
        }

    data = rd.group(root, "", "calibration_data")
    count = rd.integer(data, "/calibration_data", "sample_count")
    f["calibration_data"] = {
        "hash": rd.string(data, "/calibration_data", "hash"),
        "sample_count": count,
        "description": rd.string(data, "/calibration_data", "description"),
    }
    if count < 0:
        rd.fail("/calibration_data/sample_count", "must be >= 0")
    f["calibration_data"]["lengths"] = rd.array(data, "/calibration_data", "lengths", (count,),
                                                INTEGER)
    f["calibration_data"]["holdout_samples"] = (
        rd.array(data, "/calibration_data", "holdout_samples", None, INTEGER)
        if "holdout_samples" in data else [])
    return f


# --- JSON (`xattn profile export --json`) -------------------------------------------------------


def _from_json(data, path):
    def fail(field, what):
        raise ProfileError(f"profile {path}: field {field} {what}")

    def need(obj, where, name, kinds, kind_name):
        field = f"{where}/{name}"
        if not isinstance(obj, dict) or name not in obj:
            fail(field, "is missing; the file is incomplete, export it again")
        value = obj[name]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            fail(field, f"must be {kind_name}")
        return value

    def string(obj, where, name):
        return need(obj, where, name, (str,), "a string")

    def integer(obj, where, name):
        return need(obj, where, name, (int,), "an integer")

    def real(obj, where, name):
        value = need(obj, where, name, (int, float, type(None)), "a number")
        return math.nan if value is None else float(value)

    def matrix(obj, where, name, rows, columns):
        value = need(obj, where, name, (list,), "an array")
        if len(value) != rows or any(not isinstance(row, list) or len(row) != columns
                                     for row in value):
            fail(f"{where}/{name}", f"must be [{rows}][{columns}] (layers x query heads)")
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) for row in value
               for x in row):
            fail(f"{where}/{name}", "must hold numbers")
        # float32 in the HDF5 file, written to JSON as the shortest decimal of that float32:
        # rounded back, so both loads of one profile hold the same numbers.
        return [[_float32(x) for x in row] for row in value]

    def vector(obj, where, name, kind):
        value = need(obj, where, name, (list,), "an array")
        if any(not isinstance(x, kind) or isinstance(x, bool) for x in value):
            fail(f"{where}/{name}", "must hold numbers")
        return list(value)

    if not isinstance(data, dict) or data.get("format") != FORMAT_TAG:
        raise ProfileError(f"{path} is not an xattn profile (its 'format' is not '{FORMAT_TAG}'); "
                           "export one with `xattn profile export --json OUT PROFILE.h5`")
    version = need(data, "", "format_version", (dict,), "an object")
    major, minor = integer(version, "/format_version", "major"), integer(version,
                                                                         "/format_version",
                                                                         "minor")
    if major != FORMAT_MAJOR:
        raise ProfileError(f"profile {path} has format version {major}.{minor}; this xattn "
                           f"reads major version {FORMAT_MAJOR} only: use a matching xattn, or "
                           "recalibrate")
    f = {"format_major": major, "format_minor": minor,
         "tool_version": string(data, "", "tool_version"),
         "created_utc": string(data, "", "created_utc")}
    model = need(data, "", "model", (dict,), "an object")
    f["model"] = {name: integer(model, "/model", name)
                  for name in ("num_layers", "heads_q", "heads_kv", "head_dim")}
    for name in ("architecture", "config_hash", "weight_shapes_hash"):
        f["model"][name] = string(model, "/model", name)
    layers, heads = f["model"]["num_layers"], f["model"]["heads_q"]
    if layers <= 0 or heads <= 0:
        fail("/model/num_layers and /model/heads_q", "must be > 0")
    kernel = need(data, "", "kernel", (dict,), "an object")
    f["kernel"] = {"block_size": integer(kernel, "/kernel", "block_size"),
                   "stride": integer(kernel, "/kernel", "stride"),
                   "scale_rule": string(kernel, "/kernel", "scale_rule"),
                   "causal": bool(need(kernel, "/kernel", "causal", (bool, int), "a boolean")),
                   "dense_last_query_block": bool(kernel.get("dense_last_query_block", False))}
    if "layer_windows" in kernel:
        f["kernel"]["layer_windows"] = vector(kernel, "/kernel", "layer_windows", int)
    f["thresholds"] = matrix(data, "", "thresholds", layers, heads)
    predicted = need(data, "", "predicted", (dict,), "an object")
    f["predicted"] = {"density": matrix(predicted, "/predicted", "density", layers, heads),
                      "error": matrix(predicted, "/predicted", "error", layers, heads),
                      "mean_density": real(predicted, "/predicted", "mean_density"),
                      "mean_error": real(predicted, "/predicted", "mean_error")}
    budget = need(data, "", "budget", (dict,), "an object")
    cap = budget.get("per_head_cap")
    f["budget"] = {"epsilon": real(budget, "/budget", "epsilon"),
                   "metric": string(budget, "/budget", "metric"),
                   "per_head_cap": None if cap is None else real(budget, "/budget",
                                                                 "per_head_cap"),
                   "candidates": [float(x) for x in vector(budget, "/budget", "candidates",
                                                           (int, float))]}
    uniform = data.get("uniform")
    f["uniform"] = None if uniform is None else {
        name: real(uniform, "/uniform", name) for name in ("tau", "density", "error")}
    validation = data.get("validation") or {}
    f["validation"] = {name: real(validation, "/validation", name) for name in validation}
    f["frontier"] = data.get("frontier")
    fit = data.get("density_fit")
    f["density_fit"] = None if fit is None else {
        "reference_len": integer(fit, "/density_fit", "reference_len"),
        "density": [float(x) for x in vector(fit, "/density_fit", "density", (int, float))],
        "exponent": [float(x) for x in vector(fit, "/density_fit", "exponent", (int, float))],
        "lengths": vector(fit, "/density_fit", "lengths", int)}
    cal = need(data, "", "calibration_data", (dict,), "an object")
    f["calibration_data"] = {"hash": string(cal, "/calibration_data", "hash"),
                             "sample_count": integer(cal, "/calibration_data", "sample_count"),
                             "description": string(cal, "/calibration_data", "description"),
                             "lengths": vector(cal, "/calibration_data", "lengths", int),
                             "holdout_samples": list(cal.get("holdout_samples") or [])}
    return f


def _float32(value):
    return struct.unpack("f", struct.pack("f", float(value)))[0] if math.isfinite(value) \
        else float(value)


# --- validation: validate_profile of the C++ reader ---------------------------------------------


def _validate(p):
    def check(ok, field, what):
        if not ok:
            raise ProfileError(f"profile {p.source}: field {field} {what}")

    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    m, k = p.model, p.kernel
    check(p.format_major == FORMAT_MAJOR, "format_major",
          f"is {p.format_major}; this xattn reads major version {FORMAT_MAJOR}")
    check(m["architecture"] != "", "/model/architecture", "is empty")
    for name in ("num_layers", "heads_q"):
        check(m[name] > 0, f"/model/{name}", f"is {m[name]}; it must be > 0")
    check(m["heads_kv"] > 0 and m["heads_q"] % m["heads_kv"] == 0, "/model/heads_kv",
          f"is {m['heads_kv']}; it must be > 0 and divide heads_q ({m['heads_q']})")
    check(m["head_dim"] > 0, "/model/head_dim", f"is {m['head_dim']}; it must be > 0")
    check(k["block_size"] > 0, "/kernel/block_size", f"is {k['block_size']}; it must be > 0")
    check(k["stride"] > 0 and k["block_size"] % k["stride"] == 0, "/kernel/stride",
          f"is {k['stride']}; it must be > 0 and divide block_size ({k['block_size']})")
    check(k["scale_rule"] != "", "/kernel/scale_rule", "is empty")
    windows = k.get("layer_windows", [])
    check(not windows or len(windows) == m["num_layers"], "/kernel/layer_windows",
          f"has {len(windows)} values; expected none or num_layers = {m['num_layers']}")
    for layer, window in enumerate(windows):
        check(window >= 0, "/kernel/layer_windows",
              f"at layer {layer} is {window}; a window must be >= 0 (0: none)")
        check(window == 0 or k["causal"], "/kernel/layer_windows",
              f"at layer {layer} is {window} but /kernel/causal is 0; sliding windows are causal")
    for field, rows, low, high, closed_low in (
            ("/thresholds", p.thresholds, 0.0, 1.0, False),
            ("/predicted/density", p.predicted["density"], 0.0, 1.0, True),
            ("/predicted/error", p.predicted["error"], 0.0, math.inf, True)):
        for layer, row in enumerate(rows):
            for head, value in enumerate(row):
                ok = finite(value) and (value >= low if closed_low else value > low) and \
                    value <= high
                if not ok:
                    rule = ("τ must be in (0, 1]" if field == "/thresholds" else
                            "it must be in [0, 1]" if high == 1.0 else "it must be >= 0")
                    check(False, field, f"at layer {layer} head {head} is {value}; {rule}")
    pr = p.predicted
    check(finite(pr["mean_density"]) and 0 <= pr["mean_density"] <= 1, "/predicted/mean_density",
          f"is {pr['mean_density']}; it must be in [0, 1]")
    check(finite(pr["mean_error"]) and pr["mean_error"] >= 0, "/predicted/mean_error",
          f"is {pr['mean_error']}; it must be >= 0")
    b = p.budget
    check(finite(b["epsilon"]) and b["epsilon"] >= 0, "/budget/epsilon",
          f"is {b['epsilon']}; it must be >= 0")
    check(b["metric"] != "", "/budget/metric", "is empty; name the error metric")
    check(b["per_head_cap"] is None or (finite(b["per_head_cap"]) and b["per_head_cap"] >= 0),
          "/budget/per_head_cap", "must be a finite number >= 0")
    for tau in b["candidates"]:
        check(finite(tau) and 0 < tau <= 1, "/budget/candidates",
              f"holds {tau}; τ must be in (0, 1]")
    u = p.uniform
    if u is not None:
        check(finite(u["tau"]) and 0 < u["tau"] <= 1, "/uniform/tau",
              f"is {u['tau']}; it must be in (0, 1]")
        check(finite(u["density"]) and 0 <= u["density"] <= 1, "/uniform/density",
              f"is {u['density']}; it must be in [0, 1]")
        check(finite(u["error"]) and u["error"] >= 0, "/uniform/error",
              f"is {u['error']}; it must be >= 0")
    for name in p.validation:
        check(name != "" and "/" not in name and "." not in name, "/validation",
              f"has a bad name '{name}'; names must be non-empty, without '/' or '.'")
    fit = getattr(p, "density_fit", None)
    if fit is not None:
        layers = m["num_layers"]
        check(fit["reference_len"] > 0, "/density_fit/reference_len",
              f"is {fit['reference_len']}; it must be > 0")
        for name, low, high in (("density", 0.0, 1.0), ("exponent", 0.0, 4.0)):
            values = fit[name]
            check(len(values) == layers, f"/density_fit/{name}",
                  f"has {len(values)} values; expected num_layers = {layers}")
            for layer, value in enumerate(values):
                ok = finite(value) and value <= high and (value > low if name == "density"
                                                          else value >= low)
                check(ok, f"/density_fit/{name}", f"at layer {layer} is {value}; it must be in "
                      + ("(0, 1]" if name == "density" else "[0, 4]"))
    d = p.calibration_data
    check(d["sample_count"] >= 0, "/calibration_data/sample_count",
          f"is {d['sample_count']}; it must be >= 0")
    check(len(d["lengths"]) == d["sample_count"], "/calibration_data/lengths",
          f"has {len(d['lengths'])} entries, expected sample_count = {d['sample_count']}")
    previous = None
    for index in d["holdout_samples"]:
        check(0 <= index < d["sample_count"] and (previous is None or index > previous),
              "/calibration_data/holdout_samples",
              f"holds {index}; indices must ascend within [0, sample_count)")
        previous = index
    for length in d["lengths"]:
        check(length > 0, "/calibration_data/lengths", f"holds {length}; lengths must be > 0")
    check(p.tool_version != "", "/tool_version", "is empty")
    check(p.created_utc != "", "/created_utc", "is empty")


# --- the model check (profile_mismatches of the C++ reader, for transformers configs) -----------


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
