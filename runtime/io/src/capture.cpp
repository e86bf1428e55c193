// Reader and writer of the capture format (docs/capture-format.md). Every HDF5 failure is turned
// into an xattn::Error naming the file and the problem; nothing is printed by HDF5 itself.
#include "xattn/io/capture.h"

#include <algorithm>
#include <map>
#include <set>

#include "hdf5_io.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/paths.h"

namespace xattn::io {

const char* capture_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    default:
      break;
  }
  throw Error(
      ErrorKind::kInvalidArgument,
      std::string("captures hold float32, float16 or bfloat16, not ") + c10::toString(dtype));
}

at::ScalarType capture_dtype_from_name(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  throw Error(ErrorKind::kInvalidArgument,
              "unknown dtype '" + name + "'; use float32, float16 or bfloat16");
}

namespace {

bool is_capture_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

// The first inconsistency in `info`, or "" when there is none.
std::string find_info_problem(const CaptureInfo& info) {
  using detail::concat;
  if (info.model_name.empty()) return "model_name is empty";
  if (info.source != "model" && info.source != "synthetic" && info.source != "python-hook") {
    return "source is '" + info.source + "'; expected model, synthetic or python-hook";
  }
  if (!is_capture_dtype(info.dtype)) return "dtype must be float32, float16 or bfloat16";
  if (info.num_layers < 1) return concat("num_layers is ", info.num_layers, "; must be >= 1");
  if (info.heads_q < 1 || info.heads_kv < 1) {
    return concat("heads_q (", info.heads_q, ") and heads_kv (", info.heads_kv, ") must be >= 1");
  }
  if (info.heads_q % info.heads_kv != 0) {
    return concat("heads_q (", info.heads_q, ") is not a multiple of heads_kv (", info.heads_kv,
                  ")");
  }
  if (info.head_dim < 1) return concat("head_dim is ", info.head_dim, "; must be >= 1");
  if (info.len_q.empty()) return "len_q is empty; give one length per batch item";
  if (info.len_k.size() != info.len_q.size()) {
    return concat("len_q has ", info.len_q.size(), " items but len_k has ", info.len_k.size());
  }
  if (!info.position_offset.empty() && info.position_offset.size() != info.len_q.size()) {
    return concat("position_offset has ", info.position_offset.size(), " items but len_q has ",
                  info.len_q.size());
  }
  for (size_t b = 0; b < info.len_q.size(); ++b) {
    if (info.len_q[b] < 1 || info.len_q[b] > info.len_k[b]) {
      return concat("batch item ", b, ": len_q = ", info.len_q[b], ", len_k = ", info.len_k[b],
                    "; need 1 <= len_q <= len_k");
    }
    if (info.len_q[b] > info.padded_len_q || info.len_k[b] > info.padded_len_k) {
      return concat("batch item ", b, ": len_q = ", info.len_q[b], ", len_k = ", info.len_k[b],
                    " exceed the stored lengths ", info.padded_len_q, ", ", info.padded_len_k);
    }
    if (!info.position_offset.empty() && info.position_offset[b] < 0) {
      return concat("batch item ", b, ": position_offset ", info.position_offset[b], " < 0");
    }
  }
  if (info.video) {
    const VideoShape& v = *info.video;
    if (v.frames < 1 || v.height < 1 || v.width < 1) {
      return concat("video shape ", v.frames, "x", v.height, "x", v.width, " must be positive");
    }
    if (v.frames * v.height * v.width > info.padded_len_k) {
      return concat("video shape ", v.frames, "x", v.height, "x", v.width, " has more tokens (",
                    v.frames * v.height * v.width, ") than the keys (", info.padded_len_k, ")");
    }
  }
  return "";
}

CaptureInfo with_defaults(CaptureInfo info) {
  if (info.padded_len_q == 0 && !info.len_q.empty()) {
    info.padded_len_q = *std::max_element(info.len_q.begin(), info.len_q.end());
  }
  if (info.padded_len_k == 0 && !info.len_k.empty()) {
    info.padded_len_k = *std::max_element(info.len_k.begin(), info.len_k.end());
  }
  if (info.position_offset.empty()) info.position_offset.assign(info.len_q.size(), 0);
  return info;
}

Error bad_input(const std::string& path, const std::string& what) {
  return Error(ErrorKind::kBadInput, path + ": " + what);
}

// An HDF5 library failure while reading: the file is damaged in a way the checks did not name.
Error hdf5_read_failure(const std::string& path, const H5::Exception& e) {
  std::string cause = h5io::last_error();
  if (cause.empty()) cause = e.getDetailMsg();
  return bad_input(path, "damaged or truncated HDF5 file (HDF5: " + cause + " in " +
                             e.getFuncName() + "); recreate it");
}

H5::DataType memory_type_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return H5::PredType::NATIVE_FLOAT;
    case at::kHalf:
      return h5io::float16_type();
    case at::kBFloat16:
      return H5::PredType::NATIVE_UINT16;
    default:
      break;
  }
  throw Error(ErrorKind::kInternal, "no memory type for this dtype");
}

std::string layer_path(int64_t index) { return "/layers/" + std::to_string(index); }

}  // namespace

void validate_capture_info(const CaptureInfo& info, const std::string& what) {
  const std::string problem = find_info_problem(with_defaults(info));
  XATTN_CHECK_ARG(problem.empty(), what, ": ", problem);
}

// ---------------------------------------------------------------------------------------------
// Reader

struct CaptureReader::Impl {
  std::string path;
  std::unique_ptr<H5::H5File> file;
  CaptureInfo info;
  std::vector<int64_t> layers;

  void open();
  void read_attributes();
  void check_dataset(const H5::Group& group, const std::string& layer, const std::string& name,
                     const std::vector<int64_t>& expected);
  void check_layers();
};

void CaptureReader::Impl::open() {
  io::check_readable_file(path, "capture");
  if (!H5::H5File::isHdf5(path)) {
    throw bad_input(path, "not an HDF5 file (no HDF5 signature); expected an xattn capture");
  }
  file = std::make_unique<H5::H5File>(path, H5F_ACC_RDONLY);
}

void CaptureReader::Impl::read_attributes() {
  h5io::AttributeReader attrs(*file, path, "");
  if (!attrs.has("format")) {
    throw bad_input(path, "not an xattn capture (root attribute 'format' is missing)");
  }
  const std::string format = attrs.string("format");
  if (format != kCaptureFormatName) {
    throw bad_input(
        path, "format is '" + format + "', not '" + kCaptureFormatName + "'; give a capture file");
  }
  const std::vector<int64_t> version = attrs.integers("format_version");
  if (version.size() != 2) {
    throw bad_input(path, "attribute 'format_version' should be [major, minor]");
  }
  info.format_major = static_cast<int>(version[0]);
  info.format_minor = static_cast<int>(version[1]);
  if (info.format_major != kCaptureFormatMajor) {
    throw bad_input(path, detail::concat("capture format version ", version[0], ".", version[1],
                                         " is not readable by this build (reads ",
                                         kCaptureFormatMajor, ".x); use a matching xattn"));
  }
  info.model_name = attrs.string("model_name");
  info.source = attrs.string("source");
  info.description = attrs.has("description") ? attrs.string("description") : "";
  const std::string dtype = attrs.string("dtype");
  if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16") {
    throw bad_input(path, "dtype '" + dtype + "' is not supported (float32, float16, bfloat16)");
  }
  info.dtype = capture_dtype_from_name(dtype);
  info.num_layers = attrs.integer("num_layers");
  info.heads_q = attrs.integer("heads_q");
  info.heads_kv = attrs.integer("heads_kv");
  info.head_dim = attrs.integer("head_dim");
  info.causal = attrs.boolean("causal");
  info.has_v = attrs.boolean("has_v");
  info.len_q = attrs.integers("len_q");
  info.len_k = attrs.integers("len_k");
  info.position_offset = attrs.has("position_offset") ? attrs.integers("position_offset")
                                                      : std::vector<int64_t>(info.len_q.size());
  const bool has_frames = attrs.has("video_frames");
  if (has_frames || attrs.has("video_height") || attrs.has("video_width")) {
    info.video = VideoShape{attrs.integer("video_frames"), attrs.integer("video_height"),
                            attrs.integer("video_width")};
  }
}

void CaptureReader::Impl::check_dataset(const H5::Group& group, const std::string& layer,
                                        const std::string& name,
                                        const std::vector<int64_t>& expected) {
  const std::string where = layer + "/" + name;
  if (!group.nameExists(name)) throw bad_input(path, "dataset " + where + " is missing");
  if (group.childObjType(name) != H5O_TYPE_DATASET) {
    throw bad_input(path, where + " is not a dataset");
  }
  H5::DataSet dataset = group.openDataSet(name);
  const std::string dtype = capture_dtype_name(info.dtype);
  const H5::DataType type = dataset.getDataType();
  if (!h5io::type_matches(type, dtype)) {
    throw bad_input(path, where + " holds " + h5io::describe_type(type) +
                              ", but the file's dtype is " + dtype + " (" +
                              (dtype == "bfloat16" ? "stored as uint16" : "IEEE float") + ")");
  }
  if (info.dtype == at::kBFloat16) {
    h5io::AttributeReader attrs(dataset, path, where + ": ");
    const std::string marker = attrs.string("dtype");
    if (marker != "bfloat16") {
      throw bad_input(
          path, where + " is uint16 but its dtype attribute is '" + marker + "', not 'bfloat16'");
    }
  }
  const std::vector<int64_t> dims = h5io::dims_of(dataset);
  if (dims != expected) {
    throw bad_input(path, where + " has shape " + h5io::format_dims(dims) + "; expected " +
                              h5io::format_dims(expected) +
                              " from the attributes [batch, heads, padded_len, head_dim]");
  }
}

void CaptureReader::Impl::check_layers() {
  if (!file->nameExists("layers") || file->childObjType("layers") != H5O_TYPE_GROUP) {
    throw bad_input(path, "group /layers is missing");
  }
  H5::Group group = file->openGroup("layers");
  const hsize_t n = group.getNumObjs();
  for (hsize_t i = 0; i < n; ++i) {
    const std::string name = group.getObjnameByIdx(i);
    const int64_t index = h5io::parse_index(name);
    if (index < 0 || group.childObjType(name) != H5O_TYPE_GROUP) {
      throw bad_input(
          path, "unexpected entry /layers/" + name + " (layers are groups named by their index)");
    }
    if (index >= info.num_layers) {
      throw bad_input(path,
                      detail::concat("layer ", index, " is beyond num_layers = ", info.num_layers));
    }
    layers.push_back(index);
  }
  if (layers.empty()) throw bad_input(path, "the file holds no layers");
  std::sort(layers.begin(), layers.end());

  const int64_t batch = info.batch();
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string where = layer_path(layers[i]);
    H5::Group layer = file->openGroup(where);
    if (i == 0) {
      // The token-axis lengths of the datasets are those of the first layer; the rest must agree.
      for (const char* name : {"q", "k"}) {
        if (!layer.nameExists(name) || layer.childObjType(name) != H5O_TYPE_DATASET) {
          throw bad_input(path, "dataset " + where + "/" + name + " is missing");
        }
        const std::vector<int64_t> dims = h5io::dims_of(layer.openDataSet(name));
        if (dims.size() != 4) {
          throw bad_input(path, where + "/" + name + " has shape " + h5io::format_dims(dims) +
                                    "; expected [batch, heads, padded_len, head_dim]");
        }
        (name[0] == 'q' ? info.padded_len_q : info.padded_len_k) = dims[2];
      }
      const std::string problem = find_info_problem(info);
      if (!problem.empty()) throw bad_input(path, problem);
    }
    check_dataset(layer, where, "q", {batch, info.heads_q, info.padded_len_q, info.head_dim});
    check_dataset(layer, where, "k", {batch, info.heads_kv, info.padded_len_k, info.head_dim});
    const bool has_v = layer.nameExists("v");
    if (has_v != info.has_v) {
      throw bad_input(
          path, where + (has_v ? " has a v dataset but has_v = 0" : "/v is missing but has_v = 1"));
    }
    if (has_v) {
      check_dataset(layer, where, "v", {batch, info.heads_kv, info.padded_len_k, info.head_dim});
    }
  }
}

CaptureReader::CaptureReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  h5io::quiet_errors();
  io::check_readable_file(path, "capture");
  // The metadata parsed once in a child process: HDF5 1.10 can crash on a damaged file.
  io::h5::check_parses_safely(path, "capture", [&] {
    Impl probe;
    probe.path = path;
    probe.open();
    probe.read_attributes();
    probe.check_layers();
  });
  try {
    impl_->open();
    impl_->read_attributes();
    impl_->check_layers();
  } catch (const H5::Exception& e) {
    throw hdf5_read_failure(path, e);
  }
}

CaptureReader::~CaptureReader() = default;
CaptureReader::CaptureReader(CaptureReader&&) noexcept = default;
CaptureReader& CaptureReader::operator=(CaptureReader&&) noexcept = default;

const std::string& CaptureReader::path() const { return impl_->path; }
const CaptureInfo& CaptureReader::info() const { return impl_->info; }
const std::vector<int64_t>& CaptureReader::layer_indices() const { return impl_->layers; }

bool CaptureReader::has_layer(int64_t layer_index) const {
  return std::binary_search(impl_->layers.begin(), impl_->layers.end(), layer_index);
}

CaptureLayer CaptureReader::read_layer(int64_t layer_index) const {
  const CaptureInfo& info = impl_->info;
  XATTN_CHECK_ARG(has_layer(layer_index), impl_->path, ": has no layer ", layer_index,
                  " (it holds ", impl_->layers.size(),
                  " layers: ", h5io::format_dims(impl_->layers), ")");
  h5io::quiet_errors();
  try {
    H5::Group group = impl_->file->openGroup(layer_path(layer_index));
    const H5::DataType memory_type = memory_type_of(info.dtype);
    auto read = [&](const char* name, int64_t heads, int64_t len) {
      at::Tensor t = at::empty({info.batch(), heads, len, info.head_dim},
                               at::TensorOptions().dtype(info.dtype));
      group.openDataSet(name).read(t.data_ptr(), memory_type);
      return t;
    };
    CaptureLayer layer;
    layer.q = read("q", info.heads_q, info.padded_len_q);
    layer.k = read("k", info.heads_kv, info.padded_len_k);
    if (info.has_v) layer.v = read("v", info.heads_kv, info.padded_len_k);
    return layer;
  } catch (const H5::Exception& e) {
    throw hdf5_read_failure(impl_->path, e);
  }
}

CaptureLayer CaptureReader::read_layer_item(int64_t layer_index, int64_t item) const {
  const CaptureInfo& info = impl_->info;
  XATTN_CHECK_ARG(has_layer(layer_index), impl_->path, ": has no layer ", layer_index,
                  " (it holds ", impl_->layers.size(),
                  " layers: ", h5io::format_dims(impl_->layers), ")");
  XATTN_CHECK_ARG(item >= 0 && item < info.batch(), impl_->path, ": has no batch item ", item,
                  " (batch ", info.batch(), ")");
  h5io::quiet_errors();
  try {
    H5::Group group = impl_->file->openGroup(layer_path(layer_index));
    const H5::DataType memory_type = memory_type_of(info.dtype);
    auto read = [&](const char* name, int64_t heads, int64_t len) {
      at::Tensor t =
          at::empty({1, heads, len, info.head_dim}, at::TensorOptions().dtype(info.dtype));
      H5::DataSet dataset = group.openDataSet(name);
      H5::DataSpace file_space = dataset.getSpace();
      const hsize_t start[4] = {static_cast<hsize_t>(item), 0, 0, 0};
      const hsize_t count[4] = {1, static_cast<hsize_t>(heads), static_cast<hsize_t>(len),
                                static_cast<hsize_t>(info.head_dim)};
      file_space.selectHyperslab(H5S_SELECT_SET, count, start);
      H5::DataSpace memory_space(4, count);
      dataset.read(t.data_ptr(), memory_type, memory_space, file_space);
      return t;
    };
    CaptureLayer layer;
    layer.q = read("q", info.heads_q, info.len_q[item]);
    layer.k = read("k", info.heads_kv, info.len_k[item]);
    if (info.has_v) layer.v = read("v", info.heads_kv, info.len_k[item]);
    return layer;
  } catch (const H5::Exception& e) {
    throw hdf5_read_failure(impl_->path, e);
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

struct CaptureWriter::Impl {
  std::unique_ptr<h5io::LayerFileWriter> out;
  CaptureInfo info;
  OutputOptions options;
};

CaptureWriter::CaptureWriter(const std::string& path, CaptureInfo info, OutputOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.info = with_defaults(std::move(info));
  s.options = options;
  const std::string problem = find_info_problem(s.info);
  XATTN_CHECK_ARG(problem.empty(), path, ": cannot write this capture: ", problem);
  XATTN_CHECK_ARG(options.deflate_level >= 0 && options.deflate_level <= 9,
                  "deflate level must be 0..9, got ", options.deflate_level);
  s.out = std::make_unique<h5io::LayerFileWriter>(path, options.overwrite);
  try {
    H5::H5File& f = s.out->file();
    const CaptureInfo& i = s.info;
    h5io::write_string(f, "format", kCaptureFormatName);
    h5io::write_ints(f, "format_version", {kCaptureFormatMajor, kCaptureFormatMinor});
    h5io::write_string(f, "model_name", i.model_name);
    h5io::write_string(f, "source", i.source);
    h5io::write_string(f, "description", i.description);
    h5io::write_string(f, "dtype", capture_dtype_name(i.dtype));
    h5io::write_int(f, "num_layers", i.num_layers);
    h5io::write_int(f, "heads_q", i.heads_q);
    h5io::write_int(f, "heads_kv", i.heads_kv);
    h5io::write_int(f, "head_dim", i.head_dim);
    h5io::write_bool(f, "causal", i.causal);
    h5io::write_bool(f, "has_v", i.has_v);
    h5io::write_ints(f, "len_q", i.len_q);
    h5io::write_ints(f, "len_k", i.len_k);
    h5io::write_ints(f, "position_offset", i.position_offset);
    if (i.video) {
      h5io::write_int(f, "video_frames", i.video->frames);
      h5io::write_int(f, "video_height", i.video->height);
      h5io::write_int(f, "video_width", i.video->width);
    }
    h5io::create_group(f, "layers");
  } catch (const H5::Exception& e) {
    throw s.out->failure(e);
  }
}

CaptureWriter::~CaptureWriter() = default;

const CaptureInfo& CaptureWriter::info() const { return impl_->info; }

void CaptureWriter::write_layer(int64_t layer_index, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& v) {
  Impl& s = *impl_;
  const CaptureInfo& i = s.info;
  s.out->check_new_layer(layer_index);
  XATTN_CHECK_ARG(layer_index >= 0 && layer_index < i.num_layers, "layer index ", layer_index,
                  " is outside [0, num_layers = ", i.num_layers, ")");
  XATTN_CHECK_ARG(v.defined() == i.has_v, "layer ", layer_index,
                  i.has_v ? ": v is missing but the capture has v (has_v = true)"
                          : ": v given but the capture has no v (has_v = false)");
  auto checked = [&](const at::Tensor& t, const char* name, int64_t heads, int64_t len) {
    XATTN_CHECK_ARG(t.defined(), "layer ", layer_index, ": ", name, " is undefined");
    XATTN_CHECK_ARG(t.scalar_type() == i.dtype, "layer ", layer_index, ": ", name, " is ",
                    t.scalar_type(), " but the capture's dtype is ", capture_dtype_name(i.dtype));
    const std::vector<int64_t> expected = {i.batch(), heads, len, i.head_dim};
    XATTN_CHECK_ARG(t.sizes().vec() == expected, "layer ", layer_index, ": ", name, " has shape ",
                    t.sizes(), "; expected ", h5io::format_dims(expected),
                    " [batch, heads, padded_len, head_dim]");
    return t.to(at::kCPU).contiguous();
  };
  const at::Tensor q_cpu = checked(q, "q", i.heads_q, i.padded_len_q);
  const at::Tensor k_cpu = checked(k, "k", i.heads_kv, i.padded_len_k);
  const at::Tensor v_cpu = i.has_v ? checked(v, "v", i.heads_kv, i.padded_len_k) : at::Tensor();

  h5io::quiet_errors();
  try {
    H5::Group group = h5io::create_group(s.out->file(), layer_path(layer_index));
    h5io::write_int(group, "layer_index", layer_index);
    const std::string dtype = capture_dtype_name(i.dtype);
    const H5::DataType file_type = h5io::file_type_of(dtype);
    const H5::DataType memory_type = memory_type_of(i.dtype);
    auto write = [&](const char* name, const at::Tensor& t) {
      H5::DataSet dataset =
          h5io::create_dataset(group, name, file_type, t.sizes().vec(), s.options.deflate_level);
      h5io::write_string(dataset, "dtype", dtype);
      dataset.write(t.data_ptr(), memory_type);
    };
    write("q", q_cpu);
    write("k", k_cpu);
    if (i.has_v) write("v", v_cpu);
  } catch (const H5::Exception& e) {
    throw s.out->failure(e);
  }
  s.out->mark_written(layer_index);
}

void CaptureWriter::commit() { impl_->out->commit(); }

}  // namespace xattn::io
