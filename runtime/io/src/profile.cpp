// Profile file: HDF5 reader/writer (schema in docs/profile-format.md), model checks, JSON export
// and the readable summary.
#include "xattn/io/profile.h"

#include <H5Cpp.h>
#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::io {

namespace {

constexpr const char* kFormatTag = "xattn-profile";

// ---------------------------------------------------------------------------------------------
// HDF5 helpers. Attributes hold scalars and strings; datasets hold arrays.

bool has_link(const H5::H5Location& loc, const char* name) {
  return H5Lexists(loc.getId(), name, H5P_DEFAULT) > 0;
}

void put(H5::H5Object& obj, const char* name, const std::string& value) {
  const H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  obj.createAttribute(name, type, H5::DataSpace(H5S_SCALAR)).write(type, value);
}
void put(H5::H5Object& obj, const char* name, int64_t value) {
  obj.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
      .write(H5::PredType::NATIVE_INT64, &value);
}
void put(H5::H5Object& obj, const char* name, int32_t value) {
  obj.createAttribute(name, H5::PredType::STD_I32LE, H5::DataSpace(H5S_SCALAR))
      .write(H5::PredType::NATIVE_INT32, &value);
}
void put(H5::H5Object& obj, const char* name, double value) {
  obj.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(H5S_SCALAR))
      .write(H5::PredType::NATIVE_DOUBLE, &value);
}

template <typename T>
void put_array(H5::Group& group, const char* name, const std::vector<T>& values,
               std::vector<hsize_t> dims, const H5::PredType& file_type,
               const H5::PredType& mem_type) {
  const H5::DataSpace space(static_cast<int>(dims.size()), dims.data());
  H5::DataSet set = group.createDataSet(name, file_type, space);
  if (!values.empty()) set.write(values.data(), mem_type);
}

// Reading: every failure names the field ("/model/num_layers") and the file.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(ErrorKind::kBadInput, detail::concat("profile ", path_, ": field ", field, " ",
                                                     what));
  }

  H5::Attribute attribute(const H5::H5Object& obj, const std::string& where, const char* name,
                          H5T_class_t cls, const char* kind) const {
    const std::string field = where + "/" + name;
    if (!obj.attrExists(name)) fail(field, "is missing; the file is incomplete, recalibrate");
    H5::Attribute attr = obj.openAttribute(name);
    if (attr.getTypeClass() != cls) fail(field, detail::concat("must be ", kind));
    if (attr.getSpace().getSimpleExtentNpoints() != 1) fail(field, "must be a single value");
    return attr;
  }
  std::string get_string(const H5::H5Object& obj, const std::string& where,
                         const char* name) const {
    H5::Attribute attr = attribute(obj, where, name, H5T_STRING, "a string");
    std::string value;
    attr.read(attr.getStrType(), value);
    return value;
  }
  int64_t get_int(const H5::H5Object& obj, const std::string& where, const char* name) const {
    H5::Attribute attr = attribute(obj, where, name, H5T_INTEGER, "an integer");
    int64_t value = 0;
    attr.read(H5::PredType::NATIVE_INT64, &value);
    return value;
  }
  double get_double(const H5::H5Object& obj, const std::string& where, const char* name) const {
    H5::Attribute attr = attribute(obj, where, name, H5T_FLOAT, "a floating-point number");
    double value = 0;
    attr.read(H5::PredType::NATIVE_DOUBLE, &value);
    return value;
  }
  H5::Group group(const H5::Group& parent, const std::string& where, const char* name) const {
    const std::string field = where + "/" + name;
    if (!has_link(parent, name)) fail(field, "is missing; the file is incomplete, recalibrate");
    if (parent.childObjType(name) != H5O_TYPE_GROUP) fail(field, "must be a group");
    return parent.openGroup(name);
  }
  // A dataset of exactly `dims` (checked), read as mem_type.
  template <typename T>
  std::vector<T> get_array(const H5::Group& parent, const std::string& where, const char* name,
                           const std::vector<hsize_t>& dims, H5T_class_t cls,
                           const H5::PredType& mem_type) const {
    const std::string field = where + "/" + name;
    if (!has_link(parent, name)) fail(field, "is missing; the file is incomplete, recalibrate");
    if (parent.childObjType(name) != H5O_TYPE_DATASET) fail(field, "must be a dataset");
    H5::DataSet set = parent.openDataSet(name);
    if (set.getTypeClass() != cls) {
      fail(field, cls == H5T_FLOAT ? "must hold floating-point numbers" : "must hold integers");
    }
    const H5::DataSpace space = set.getSpace();
    std::vector<hsize_t> actual(static_cast<size_t>(std::max(space.getSimpleExtentNdims(), 0)));
    if (!actual.empty()) space.getSimpleExtentDims(actual.data());
    if (actual != dims) fail(field, detail::concat("has shape ", shape(actual), ", expected ", shape(dims)));
    std::vector<T> values(space.getSimpleExtentNpoints());
    if (!values.empty()) set.read(values.data(), mem_type);
    return values;
  }
  // A 1-D dataset of any length.
  std::vector<double> get_vector(const H5::Group& parent, const std::string& where,
                                 const char* name) const {
    const std::string field = where + "/" + name;
    if (!has_link(parent, name)) fail(field, "is missing; the file is incomplete, recalibrate");
    H5::DataSet set = parent.openDataSet(name);
    const H5::DataSpace space = set.getSpace();
    if (space.getSimpleExtentNdims() != 1) fail(field, "must be one-dimensional");
    hsize_t n = 0;
    space.getSimpleExtentDims(&n);
    return get_array<double>(parent, where, name, {n}, H5T_FLOAT, H5::PredType::NATIVE_DOUBLE);
  }

  static std::string shape(const std::vector<hsize_t>& dims) {
    std::ostringstream out;
    out << "[";
    for (size_t i = 0; i < dims.size(); ++i) out << (i ? ", " : "") << dims[i];
    out << "]";
    return out.str();
  }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------

void check_field(bool ok, const char* field, const std::string& what) {
  XATTN_CHECK_INPUT(ok, "profile field ", field, " ", what);
}

// Shortest decimal that reads back as the same float, as a double (0.9f -> 0.9, not 0.8999999762).
double float_for_json(float value) {
  char buf[32];
  for (int precision = 1; precision <= 9; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, static_cast<double>(value));
    if (std::strtof(buf, nullptr) == value) break;
  }
  return std::strtod(buf, nullptr);
}

nlohmann::ordered_json matrix_json(const std::vector<float>& values, int64_t rows, int64_t cols) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (int64_t r = 0; r < rows; ++r) {
    nlohmann::ordered_json row = nlohmann::ordered_json::array();
    for (int64_t c = 0; c < cols; ++c) row.push_back(float_for_json(values[r * cols + c]));
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace

std::string fnv1a64(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char text[40];
  std::snprintf(text, sizeof text, "fnv1a64:%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

void validate_profile(const Profile& p) {
  check_field(p.format_major == kProfileFormatMajor, "format_major",
              detail::concat("is ", p.format_major, "; this build writes and reads major version ",
                             kProfileFormatMajor));
  const ModelSignature& m = p.model;
  check_field(!m.architecture.empty(), "/model/architecture", "is empty");
  check_field(m.num_layers > 0, "/model/num_layers", detail::concat("is ", m.num_layers, "; it must be > 0"));
  check_field(m.heads_q > 0, "/model/heads_q", detail::concat("is ", m.heads_q, "; it must be > 0"));
  check_field(m.heads_kv > 0 && m.heads_q % m.heads_kv == 0, "/model/heads_kv",
              detail::concat("is ", m.heads_kv, "; it must be > 0 and divide heads_q (", m.heads_q, ")"));
  check_field(m.head_dim > 0, "/model/head_dim", detail::concat("is ", m.head_dim, "; it must be > 0"));
  const KernelSettings& k = p.kernel;
  check_field(k.block_size > 0, "/kernel/block_size", detail::concat("is ", k.block_size, "; it must be > 0"));
  check_field(k.stride > 0 && k.block_size % k.stride == 0, "/kernel/stride",
              detail::concat("is ", k.stride, "; it must be > 0 and divide block_size (", k.block_size, ")"));
  check_field(!k.scale_rule.empty(), "/kernel/scale_rule", "is empty");
  check_field(k.layer_windows.empty() || int64_t(k.layer_windows.size()) == m.num_layers,
              "/kernel/layer_windows",
              detail::concat("has ", k.layer_windows.size(), " values; expected none or num_layers = ",
                             m.num_layers));
  for (size_t l = 0; l < k.layer_windows.size(); ++l) {
    check_field(k.layer_windows[l] >= 0, "/kernel/layer_windows",
                detail::concat("at layer ", l, " is ", k.layer_windows[l],
                               "; a window must be >= 0 (0: none)"));
    check_field(k.layer_windows[l] == 0 || k.causal, "/kernel/layer_windows",
                detail::concat("at layer ", l, " is ", k.layer_windows[l],
                               " but /kernel/causal is 0; sliding windows are causal"));
  }
  const size_t n = static_cast<size_t>(m.num_layers * m.heads_q);
  const std::string expect = detail::concat("; expected num_layers x heads_q = ", m.num_layers, " x ",
                                            m.heads_q, " = ", n);
  check_field(p.thresholds.size() == n, "/thresholds",
              detail::concat("has ", p.thresholds.size(), " values", expect));
  check_field(p.predicted_density.size() == n, "/predicted/density",
              detail::concat("has ", p.predicted_density.size(), " values", expect));
  check_field(p.predicted_error.size() == n, "/predicted/error",
              detail::concat("has ", p.predicted_error.size(), " values", expect));
  for (size_t i = 0; i < n; ++i) {
    const std::string at = detail::concat(" at layer ", i / m.heads_q, " head ", i % m.heads_q, " is ");
    check_field(std::isfinite(p.thresholds[i]) && p.thresholds[i] > 0.f && p.thresholds[i] <= 1.f,
                "/thresholds", detail::concat(at, p.thresholds[i], "; τ must be in (0, 1]"));
    check_field(std::isfinite(p.predicted_density[i]) && p.predicted_density[i] >= 0.f &&
                    p.predicted_density[i] <= 1.f,
                "/predicted/density", detail::concat(at, p.predicted_density[i], "; it must be in [0, 1]"));
    check_field(std::isfinite(p.predicted_error[i]) && p.predicted_error[i] >= 0.f,
                "/predicted/error", detail::concat(at, p.predicted_error[i], "; it must be >= 0"));
  }
  check_field(std::isfinite(p.predicted_mean_density) && p.predicted_mean_density >= 0 &&
                  p.predicted_mean_density <= 1,
              "/predicted/mean_density", detail::concat("is ", p.predicted_mean_density, "; it must be in [0, 1]"));
  check_field(std::isfinite(p.predicted_mean_error) && p.predicted_mean_error >= 0,
              "/predicted/mean_error", detail::concat("is ", p.predicted_mean_error, "; it must be >= 0"));
  check_field(std::isfinite(p.budget.epsilon) && p.budget.epsilon >= 0, "/budget/epsilon",
              detail::concat("is ", p.budget.epsilon, "; it must be >= 0"));
  check_field(!p.budget.metric.empty(), "/budget/metric", "is empty; name the error metric");
  check_field(!p.budget.per_head_cap || (std::isfinite(*p.budget.per_head_cap) && *p.budget.per_head_cap >= 0),
              "/budget/per_head_cap", "must be a finite number >= 0");
  for (double tau : p.budget.candidates) {
    check_field(std::isfinite(tau) && tau > 0 && tau <= 1, "/budget/candidates",
                detail::concat("holds ", tau, "; τ must be in (0, 1]"));
  }
  if (p.uniform) {
    check_field(std::isfinite(p.uniform->tau) && p.uniform->tau > 0 && p.uniform->tau <= 1,
                "/uniform/tau", detail::concat("is ", p.uniform->tau, "; it must be in (0, 1]"));
    check_field(std::isfinite(p.uniform->density) && p.uniform->density >= 0 && p.uniform->density <= 1,
                "/uniform/density", detail::concat("is ", p.uniform->density, "; it must be in [0, 1]"));
    check_field(std::isfinite(p.uniform->error) && p.uniform->error >= 0, "/uniform/error",
                detail::concat("is ", p.uniform->error, "; it must be >= 0"));
  }
  if (!p.density_fit.empty()) {
    const DensityFit& f = p.density_fit;
    check_field(f.reference_len > 0, "/density_fit/reference_len",
                detail::concat("is ", f.reference_len, "; it must be > 0"));
    check_field(f.density.size() == size_t(m.num_layers), "/density_fit/density",
                detail::concat("has ", f.density.size(), " values; expected num_layers = ", m.num_layers));
    check_field(f.exponent.size() == size_t(m.num_layers), "/density_fit/exponent",
                detail::concat("has ", f.exponent.size(), " values; expected num_layers = ", m.num_layers));
    for (size_t l = 0; l < f.density.size(); ++l) {
      check_field(std::isfinite(f.density[l]) && f.density[l] > 0 && f.density[l] <= 1,
                  "/density_fit/density", detail::concat("at layer ", l, " is ", f.density[l], "; it must be in (0, 1]"));
      check_field(std::isfinite(f.exponent[l]) && f.exponent[l] >= 0 && f.exponent[l] <= 4,
                  "/density_fit/exponent", detail::concat("at layer ", l, " is ", f.exponent[l], "; it must be in [0, 4]"));
    }
    for (int64_t len : f.lengths)
      check_field(len > 0, "/density_fit/lengths", detail::concat("holds ", len, "; lengths must be > 0"));
  }
  for (const auto& [name, value] : p.validation) {
    check_field(!name.empty() && name.find('/') == std::string::npos && name.find('.') == std::string::npos,
                "/validation", detail::concat("has a bad name '", name, "'; names must be non-empty, without '/' or '.'"));
    (void)value;  // any double, NaN included (a metric that could not be computed)
  }
  check_field(p.data.sample_count >= 0, "/calibration_data/sample_count",
              detail::concat("is ", p.data.sample_count, "; it must be >= 0"));
  check_field(p.data.lengths.size() == static_cast<size_t>(p.data.sample_count),
              "/calibration_data/lengths",
              detail::concat("has ", p.data.lengths.size(), " entries, expected sample_count = ",
                             p.data.sample_count));
  for (size_t i = 0; i < p.data.holdout_samples.size(); ++i) {
    const int64_t index = p.data.holdout_samples[i];
    check_field(index >= 0 && index < p.data.sample_count &&
                    (i == 0 || index > p.data.holdout_samples[i - 1]),
                "/calibration_data/holdout_samples",
                detail::concat("holds ", index, "; indices must ascend within [0, sample_count)"));
  }
  for (int64_t len : p.data.lengths) {
    check_field(len > 0, "/calibration_data/lengths", detail::concat("holds ", len, "; lengths must be > 0"));
  }
  check_field(!p.tool_version.empty(), "/tool_version", "is empty");
  check_field(!p.created_utc.empty(), "/created_utc", "is empty");
}

void write_profile(const std::string& path, const Profile& p, bool overwrite) {
  validate_profile(p);  // before touching the disk
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    H5::Exception::dontPrint();
    try {
      H5::H5File file(temp, H5F_ACC_EXCL);
      H5::Group root = file.openGroup("/");
      put(root, "format", std::string(kFormatTag));
      put(root, "format_major", p.format_major);
      put(root, "format_minor", p.format_minor);
      put(root, "tool_version", p.tool_version);
      put(root, "created_utc", p.created_utc);

      H5::Group model = file.createGroup("model");
      put(model, "architecture", p.model.architecture);
      put(model, "num_layers", p.model.num_layers);
      put(model, "heads_q", p.model.heads_q);
      put(model, "heads_kv", p.model.heads_kv);
      put(model, "head_dim", p.model.head_dim);
      put(model, "config_hash", p.model.config_hash);
      put(model, "weight_shapes_hash", p.model.weight_shapes_hash);

      H5::Group kernel = file.createGroup("kernel");
      put(kernel, "block_size", p.kernel.block_size);
      put(kernel, "stride", p.kernel.stride);
      put(kernel, "scale_rule", p.kernel.scale_rule);
      put(kernel, "causal", static_cast<int32_t>(p.kernel.causal ? 1 : 0));
      put(kernel, "dense_last_query_block",
          static_cast<int32_t>(p.kernel.dense_last_query_block ? 1 : 0));
      if (!p.kernel.layer_windows.empty())
        put_array(kernel, "layer_windows", p.kernel.layer_windows,
                  {static_cast<hsize_t>(p.model.num_layers)}, H5::PredType::STD_I64LE,
                  H5::PredType::NATIVE_INT64);

      const std::vector<hsize_t> grid = {static_cast<hsize_t>(p.model.num_layers),
                                         static_cast<hsize_t>(p.model.heads_q)};
      put_array(root, "thresholds", p.thresholds, grid, H5::PredType::IEEE_F32LE,
                H5::PredType::NATIVE_FLOAT);
      H5::Group predicted = file.createGroup("predicted");
      put_array(predicted, "density", p.predicted_density, grid, H5::PredType::IEEE_F32LE,
                H5::PredType::NATIVE_FLOAT);
      put_array(predicted, "error", p.predicted_error, grid, H5::PredType::IEEE_F32LE,
                H5::PredType::NATIVE_FLOAT);
      put(predicted, "mean_density", p.predicted_mean_density);
      put(predicted, "mean_error", p.predicted_mean_error);

      H5::Group budget = file.createGroup("budget");
      put(budget, "epsilon", p.budget.epsilon);
      put(budget, "metric", p.budget.metric);
      if (p.budget.per_head_cap) put(budget, "per_head_cap", *p.budget.per_head_cap);
      put_array(budget, "candidates", p.budget.candidates,
                {static_cast<hsize_t>(p.budget.candidates.size())}, H5::PredType::IEEE_F64LE,
                H5::PredType::NATIVE_DOUBLE);

      if (p.uniform) {
        H5::Group uniform = file.createGroup("uniform");
        put(uniform, "tau", p.uniform->tau);
        put(uniform, "density", p.uniform->density);
        put(uniform, "error", p.uniform->error);
      }
      if (!p.validation.empty()) {
        H5::Group validation = file.createGroup("validation");
        for (const auto& [name, value] : p.validation) put(validation, name.c_str(), value);
      }

      if (!p.frontier.empty()) {
        H5::Group frontier = file.createGroup("frontier");
        put(frontier, "holdout_tokens", p.frontier.holdout_tokens);
        for (const auto& [name, curve] : {std::make_pair("uniform", &p.frontier.uniform),
                                          std::make_pair("per_head", &p.frontier.per_head)}) {
          H5::Group g = frontier.createGroup(name);
          const hsize_t n = curve->size();
          // A named copy: a lambda may not capture a structured binding before C++20 (clang).
          const std::vector<FrontierPoint>* const points = curve;
          auto column = [&](const char* field, double FrontierPoint::*member) {
            std::vector<double> values;
            for (const auto& point : *points) values.push_back(point.*member);
            put_array(g, field, values, {n}, H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE);
          };
          column("parameter", &FrontierPoint::parameter);
          column("predicted_density", &FrontierPoint::predicted_density);
          column("density", &FrontierPoint::density);
          column("kl", &FrontierPoint::kl);
          column("nll_increase", &FrontierPoint::nll_increase);
        }
      }

      if (!p.density_fit.empty()) {
        const DensityFit& f = p.density_fit;
        H5::Group fit = file.createGroup("density_fit");
        put(fit, "reference_len", f.reference_len);
        const hsize_t n = f.density.size();
        put_array(fit, "density", f.density, {n}, H5::PredType::IEEE_F64LE,
                  H5::PredType::NATIVE_DOUBLE);
        put_array(fit, "exponent", f.exponent, {n}, H5::PredType::IEEE_F64LE,
                  H5::PredType::NATIVE_DOUBLE);
        put_array(fit, "lengths", f.lengths, {static_cast<hsize_t>(f.lengths.size())},
                  H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64);
      }

      H5::Group data = file.createGroup("calibration_data");
      put(data, "hash", p.data.hash);
      put(data, "sample_count", p.data.sample_count);
      put(data, "description", p.data.description);
      put_array(data, "lengths", p.data.lengths, {static_cast<hsize_t>(p.data.lengths.size())},
                H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64);
      put_array(data, "holdout_samples", p.data.holdout_samples,
                {static_cast<hsize_t>(p.data.holdout_samples.size())}, H5::PredType::STD_I64LE,
                H5::PredType::NATIVE_INT64);
      file.close();
    } catch (const H5::Exception& e) {
      throw Error(ErrorKind::kIo, detail::concat("cannot write profile ", path, ": HDF5 failed in ",
                                                 e.getFuncName(), ": ", e.getDetailMsg()));
    }
  });
}

namespace {

// Every field of the file, unvalidated; kBadInput when one is missing or malformed.
Profile parse_profile(const std::string& path) {
  const Reader rd(path);
  Profile p;
  try {
    // HDF5's own check: a file cut short fails here or on the first object it reaches.
    XATTN_CHECK_INPUT(H5::H5File::isHdf5(path), path,
                      " is not an HDF5 file (or its header is damaged); expected an xattn profile");
    H5::H5File file(path, H5F_ACC_RDONLY);
    const H5::Group root = file.openGroup("/");
    XATTN_CHECK_INPUT(root.attrExists("format") &&
                          rd.get_string(root, "", "format") == kFormatTag,
                      path, " is not an xattn profile (its root attribute 'format' is not '",
                      kFormatTag, "')");
    p.format_major = static_cast<int32_t>(rd.get_int(root, "", "format_major"));
    p.format_minor = static_cast<int32_t>(rd.get_int(root, "", "format_minor"));
    XATTN_CHECK_INPUT(p.format_major == kProfileFormatMajor, "profile ", path,
                      " has format version ", p.format_major, ".", p.format_minor,
                      "; this build of xattn reads major version ", kProfileFormatMajor,
                      " only: use a matching xattn, or recalibrate");
    p.tool_version = rd.get_string(root, "", "tool_version");
    p.created_utc = rd.get_string(root, "", "created_utc");

    const H5::Group model = rd.group(root, "", "model");
    p.model.architecture = rd.get_string(model, "/model", "architecture");
    p.model.num_layers = rd.get_int(model, "/model", "num_layers");
    p.model.heads_q = rd.get_int(model, "/model", "heads_q");
    p.model.heads_kv = rd.get_int(model, "/model", "heads_kv");
    p.model.head_dim = rd.get_int(model, "/model", "head_dim");
    p.model.config_hash = rd.get_string(model, "/model", "config_hash");
    p.model.weight_shapes_hash = rd.get_string(model, "/model", "weight_shapes_hash");
    if (p.model.num_layers <= 0 || p.model.heads_q <= 0) {
      rd.fail("/model/num_layers and /model/heads_q", "must be > 0");
    }

    const H5::Group kernel = rd.group(root, "", "kernel");
    p.kernel.block_size = rd.get_int(kernel, "/kernel", "block_size");
    p.kernel.stride = rd.get_int(kernel, "/kernel", "stride");
    p.kernel.scale_rule = rd.get_string(kernel, "/kernel", "scale_rule");
    p.kernel.causal = rd.get_int(kernel, "/kernel", "causal") != 0;
    // Before 1.2 the last query block was selected like the others.
    p.kernel.dense_last_query_block =
        kernel.attrExists("dense_last_query_block") &&
        rd.get_int(kernel, "/kernel", "dense_last_query_block") != 0;
    // Before 1.5 no window was recorded: none.
    if (has_link(kernel, "layer_windows"))
      p.kernel.layer_windows = rd.get_array<int64_t>(
          kernel, "/kernel", "layer_windows", {static_cast<hsize_t>(p.model.num_layers)},
          H5T_INTEGER, H5::PredType::NATIVE_INT64);

    const std::vector<hsize_t> grid = {static_cast<hsize_t>(p.model.num_layers),
                                       static_cast<hsize_t>(p.model.heads_q)};
    p.thresholds = rd.get_array<float>(root, "", "thresholds", grid, H5T_FLOAT,
                                       H5::PredType::NATIVE_FLOAT);
    const H5::Group predicted = rd.group(root, "", "predicted");
    p.predicted_density = rd.get_array<float>(predicted, "/predicted", "density", grid, H5T_FLOAT,
                                              H5::PredType::NATIVE_FLOAT);
    p.predicted_error = rd.get_array<float>(predicted, "/predicted", "error", grid, H5T_FLOAT,
                                            H5::PredType::NATIVE_FLOAT);
    p.predicted_mean_density = rd.get_double(predicted, "/predicted", "mean_density");
    p.predicted_mean_error = rd.get_double(predicted, "/predicted", "mean_error");

    const H5::Group budget = rd.group(root, "", "budget");
    p.budget.epsilon = rd.get_double(budget, "/budget", "epsilon");
    p.budget.metric = rd.get_string(budget, "/budget", "metric");
    if (budget.attrExists("per_head_cap")) {
      p.budget.per_head_cap = rd.get_double(budget, "/budget", "per_head_cap");
    }
    p.budget.candidates = rd.get_vector(budget, "/budget", "candidates");

    if (has_link(root, "uniform")) {
      const H5::Group uniform = rd.group(root, "", "uniform");
      p.uniform = UniformComparison{rd.get_double(uniform, "/uniform", "tau"),
                                    rd.get_double(uniform, "/uniform", "density"),
                                    rd.get_double(uniform, "/uniform", "error")};
    }
    if (has_link(root, "validation")) {
      const H5::Group validation = rd.group(root, "", "validation");
      for (int i = 0; i < validation.getNumAttrs(); ++i) {
        const std::string name = validation.openAttribute(static_cast<unsigned>(i)).getName();
        p.validation[name] = rd.get_double(validation, "/validation", name.c_str());
      }
    }

    if (has_link(root, "frontier")) {  // format 1.3
      const H5::Group frontier = rd.group(root, "", "frontier");
      p.frontier.holdout_tokens = rd.get_int(frontier, "/frontier", "holdout_tokens");
      for (const auto& [name, curve] : {std::make_pair("uniform", &p.frontier.uniform),
                                        std::make_pair("per_head", &p.frontier.per_head)}) {
        const std::string where = std::string("/frontier/") + name;
        const H5::Group g = rd.group(frontier, "/frontier", name);
        const std::vector<double> parameter = rd.get_vector(g, where, "parameter");
        const size_t n = parameter.size();
        curve->assign(n, FrontierPoint{});
        std::vector<FrontierPoint>* const points = curve;  // capturable (see write_profile)
        auto column = [&](const char* field, double FrontierPoint::*member) {
          const std::vector<double> values = rd.get_vector(g, where, field);
          if (values.size() != n) rd.fail(where + "/" + field, "differs in length from parameter");
          for (size_t i = 0; i < n; ++i) {
            if (!std::isfinite(values[i])) rd.fail(where + "/" + field, "holds a non-finite value");
            (*points)[i].*member = values[i];
          }
        };
        column("parameter", &FrontierPoint::parameter);
        column("predicted_density", &FrontierPoint::predicted_density);
        column("density", &FrontierPoint::density);
        column("kl", &FrontierPoint::kl);
        column("nll_increase", &FrontierPoint::nll_increase);
      }
    }

    if (has_link(root, "density_fit")) {  // format 1.4
      const H5::Group fit = rd.group(root, "", "density_fit");
      p.density_fit.reference_len = rd.get_int(fit, "/density_fit", "reference_len");
      p.density_fit.density = rd.get_vector(fit, "/density_fit", "density");
      p.density_fit.exponent = rd.get_vector(fit, "/density_fit", "exponent");
      if (!has_link(fit, "lengths")) rd.fail("/density_fit/lengths", "is missing; recalibrate");
      const H5::DataSpace space = fit.openDataSet("lengths").getSpace();
      if (space.getSimpleExtentNdims() != 1) rd.fail("/density_fit/lengths", "must be one-dimensional");
      hsize_t n = 0;
      space.getSimpleExtentDims(&n);
      p.density_fit.lengths = rd.get_array<int64_t>(fit, "/density_fit", "lengths", {n}, H5T_INTEGER,
                                                    H5::PredType::NATIVE_INT64);
    }

    const H5::Group data = rd.group(root, "", "calibration_data");
    p.data.hash = rd.get_string(data, "/calibration_data", "hash");
    p.data.sample_count = rd.get_int(data, "/calibration_data", "sample_count");
    p.data.description = rd.get_string(data, "/calibration_data", "description");
    if (p.data.sample_count < 0) rd.fail("/calibration_data/sample_count", "must be >= 0");
    p.data.lengths = rd.get_array<int64_t>(data, "/calibration_data", "lengths",
                                           {static_cast<hsize_t>(p.data.sample_count)},
                                           H5T_INTEGER, H5::PredType::NATIVE_INT64);
    if (has_link(data, "holdout_samples")) {  // format 1.1
      const H5::DataSpace space = data.openDataSet("holdout_samples").getSpace();
      if (space.getSimpleExtentNdims() != 1)
        rd.fail("/calibration_data/holdout_samples", "must be one-dimensional");
      hsize_t n = 0;
      space.getSimpleExtentDims(&n);
      p.data.holdout_samples = rd.get_array<int64_t>(data, "/calibration_data", "holdout_samples",
                                                     {n}, H5T_INTEGER, H5::PredType::NATIVE_INT64);
    }
  } catch (const H5::Exception& e) {
    throw Error(ErrorKind::kBadInput,
                detail::concat("cannot read profile ", path, ": HDF5 failed in ", e.getFuncName(),
                               " (", e.getDetailMsg(), "); the file is damaged or truncated"));
  }
  return p;
}

}  // namespace

Profile read_profile(const std::string& path) {
  H5::Exception::dontPrint();
  io::check_readable_file(path, "profile");
  io::h5::check_parses_safely(path, "profile", [&] { parse_profile(path); });
  Profile p = parse_profile(path);
  try {
    validate_profile(p);
  } catch (const Error& e) {
    throw Error(e.kind(), detail::concat("profile ", path, ": ", e.what()));
  }
  return p;
}

std::vector<std::string> profile_mismatches(const Profile& profile, const ModelSignature& model) {
  const ModelSignature& have = profile.model;
  std::vector<std::string> out;
  if (have.architecture != model.architecture) {
    out.push_back(detail::concat("profile is for architecture '", have.architecture,
                                 "', model is '", model.architecture, "'"));
  }
  auto count = [&](int64_t a, int64_t b, const char* what) {
    if (a != b) out.push_back(detail::concat("profile is for ", a, " ", what, ", model has ", b));
  };
  count(have.num_layers, model.num_layers, "layers");
  count(have.heads_q, model.heads_q, "query heads");
  count(have.heads_kv, model.heads_kv, "KV heads");
  if (have.head_dim != model.head_dim) {
    out.push_back(detail::concat("profile is for head_dim ", have.head_dim,
                                 ", model has head_dim ", model.head_dim));
  }
  auto hash = [&](const std::string& a, const std::string& b, const char* what) {
    if (!a.empty() && !b.empty() && a != b) {
      out.push_back(detail::concat(what, " differs (profile ", a, ", model ", b, ")"));
    }
  };
  hash(have.config_hash, model.config_hash, "config.json hash");
  hash(have.weight_shapes_hash, model.weight_shapes_hash, "weight shapes hash");
  return out;
}

void check_profile_matches(const Profile& profile, const ModelSignature& model) {
  const std::vector<std::string> diffs = profile_mismatches(profile, model);
  if (diffs.empty()) return;
  std::ostringstream msg;
  msg << "profile does not match the model: ";
  for (size_t i = 0; i < diffs.size(); ++i) msg << (i ? "; " : "") << diffs[i];
  msg << ". Calibrate a profile for this model with `xattn calibrate`";
  throw Error(ErrorKind::kBadInput, msg.str());
}

std::string profile_to_json(const Profile& p) {
  using json = nlohmann::ordered_json;  // keys in schema order, as in docs/profile-format.md
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  json j;
  j["format"] = kFormatTag;
  j["format_version"] = {{"major", p.format_major}, {"minor", p.format_minor}};
  j["tool_version"] = p.tool_version;
  j["created_utc"] = p.created_utc;
  j["model"] = {{"architecture", p.model.architecture},
                {"num_layers", p.model.num_layers},
                {"heads_q", p.model.heads_q},
                {"heads_kv", p.model.heads_kv},
                {"head_dim", p.model.head_dim},
                {"config_hash", p.model.config_hash},
                {"weight_shapes_hash", p.model.weight_shapes_hash}};
  j["kernel"] = {{"block_size", p.kernel.block_size},
                 {"stride", p.kernel.stride},
                 {"scale_rule", p.kernel.scale_rule},
                 {"causal", p.kernel.causal},
                 {"dense_last_query_block", p.kernel.dense_last_query_block}};
  if (!p.kernel.layer_windows.empty()) j["kernel"]["layer_windows"] = p.kernel.layer_windows;
  j["thresholds"] = matrix_json(p.thresholds, L, H);
  j["predicted"] = {{"density", matrix_json(p.predicted_density, L, H)},
                    {"error", matrix_json(p.predicted_error, L, H)},
                    {"mean_density", p.predicted_mean_density},
                    {"mean_error", p.predicted_mean_error}};
  j["budget"] = {{"epsilon", p.budget.epsilon},
                 {"metric", p.budget.metric},
                 {"per_head_cap", p.budget.per_head_cap ? json(*p.budget.per_head_cap) : json()},
                 {"candidates", p.budget.candidates}};
  j["uniform"] = p.uniform ? json{{"tau", p.uniform->tau},
                                  {"density", p.uniform->density},
                                  {"error", p.uniform->error}}
                           : json();
  json validation = json::object();
  for (const auto& [name, value] : p.validation) {
    validation[name] = std::isfinite(value) ? json(value) : json();  // JSON has no NaN
  }
  j["validation"] = validation;
  if (!p.frontier.empty()) {
    json frontier = json::object();
    frontier["holdout_tokens"] = p.frontier.holdout_tokens;
    for (const auto& [name, curve] : {std::make_pair("uniform", &p.frontier.uniform),
                                      std::make_pair("per_head", &p.frontier.per_head)}) {
      json points = json::array();
      for (const auto& point : *curve)
        points.push_back({{"parameter", point.parameter},
                          {"predicted_density", point.predicted_density},
                          {"density", point.density},
                          {"kl", point.kl},
                          {"nll_increase", point.nll_increase}});
      frontier[name] = points;
    }
    j["frontier"] = frontier;
  }
  if (!p.density_fit.empty()) {
    j["density_fit"] = {{"reference_len", p.density_fit.reference_len},
                        {"density", p.density_fit.density},
                        {"exponent", p.density_fit.exponent},
                        {"lengths", p.density_fit.lengths}};
  }
  j["calibration_data"] = {{"hash", p.data.hash},
                           {"sample_count", p.data.sample_count},
                           {"lengths", p.data.lengths},
                           {"holdout_samples", p.data.holdout_samples},
                           {"description", p.data.description}};
  // The free text holds file names, which need not be UTF-8: bytes that are not become U+FFFD in
  // the export (the HDF5 profile keeps them as they are).
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void write_profile_json(const std::string& path, const Profile& profile, bool overwrite) {
  validate_profile(profile);
  const std::string text = profile_to_json(profile);
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot create ", temp, ": ", std::strerror(errno));
    out << text;
    out.close();
    XATTN_CHECK(!out.fail(), ErrorKind::kIo, "cannot write ", path, " (disk full?)");
  });
}

std::string format_profile_summary(const Profile& p) {
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  std::ostringstream out;
  out << "xattn profile, format " << p.format_major << "." << p.format_minor << ", written by "
      << p.tool_version << " at " << p.created_utc << "\n";
  out << "model        " << p.model.architecture << ": " << L << " layers, " << H << " query / "
      << p.model.heads_kv << " KV heads, head_dim " << p.model.head_dim << "\n";
  out << "             config.json " << (p.model.config_hash.empty() ? "(unknown)" : p.model.config_hash)
      << ", weight shapes "
      << (p.model.weight_shapes_hash.empty() ? "(unknown)" : p.model.weight_shapes_hash) << "\n";
  out << "kernel       block " << p.kernel.block_size << ", stride " << p.kernel.stride
      << ", scale " << p.kernel.scale_rule << ", " << (p.kernel.causal ? "causal" : "non-causal")
      << (p.kernel.causal && p.kernel.dense_last_query_block ? ", last query block dense" : "");
  {
    int64_t windowed = 0, widest = 0;
    for (int64_t w : p.kernel.layer_windows) {
      windowed += w > 0;
      widest = std::max(widest, w);
    }
    if (windowed > 0)
      out << ", sliding window " << widest << " on " << windowed << " of " << L << " layers";
  }
  out << "\n";
  out << std::setprecision(4);
  out << "budget       mean " << p.budget.metric << " <= " << p.budget.epsilon;
  if (p.budget.per_head_cap) out << ", per-head cap " << *p.budget.per_head_cap;
  out << ", " << p.budget.candidates.size() << " candidate τ\n";
  out << "predicted    mean density " << p.predicted_mean_density << ", mean error "
      << p.predicted_mean_error << "\n";
  if (p.uniform) {
    out << "uniform τ    " << p.uniform->tau << ": density " << p.uniform->density << ", error "
        << p.uniform->error;
    if (p.uniform->density > 0) {
      out << " (per-head thresholds keep "
          << std::setprecision(3) << 100.0 * p.predicted_mean_density / p.uniform->density
          << "% of its blocks)" << std::setprecision(4);
    }
    out << "\n";
  } else {
    out << "uniform τ    none meets the budget\n";
  }
  if (!p.validation.empty()) {
    out << "validation  ";
    for (const auto& [name, value] : p.validation) out << " " << name << " " << value;
    out << "\n";
  }
  out << "data         " << p.data.sample_count << " samples";
  if (!p.data.lengths.empty()) {
    const auto [lo, hi] = std::minmax_element(p.data.lengths.begin(), p.data.lengths.end());
    double total = 0;
    for (int64_t len : p.data.lengths) total += static_cast<double>(len);
    out << ", " << *lo << ".." << *hi << " tokens (mean "
        << static_cast<int64_t>(std::llround(total / p.data.lengths.size())) << ")";
  }
  if (!p.data.hash.empty()) out << ", hash " << p.data.hash;
  if (!p.data.description.empty()) out << ", " << p.data.description;
  out << "\n\n";
  out << "layer   mean τ    min τ    max τ  density  pred. error\n" << std::fixed;
  for (int64_t l = 0; l < L; ++l) {
    double tau = 0, lo = 1, hi = 0, dens = 0, err = 0;
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = static_cast<size_t>(l * H + h);
      tau += p.thresholds[i];
      lo = std::min(lo, static_cast<double>(p.thresholds[i]));
      hi = std::max(hi, static_cast<double>(p.thresholds[i]));
      dens += p.predicted_density[i];
      err += p.predicted_error[i];
    }
    out << std::setw(5) << l << std::setprecision(4) << std::setw(9) << tau / H << std::setw(9)
        << lo << std::setw(9) << hi << std::setw(9) << dens / H << std::setw(13)
        << std::setprecision(6) << err / H << "\n";
  }
  return out.str();
}

}  // namespace xattn::io
