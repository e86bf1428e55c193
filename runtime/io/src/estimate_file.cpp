// Writer and reader of `xattn estimate --out` files (docs/capture-format.md, "Estimate output").
#include "xattn/io/estimate_file.h"

#include <algorithm>
#include <set>

#include "hdf5_io.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/paths.h"

namespace xattn::io {

namespace {

Error bad_input(const std::string& path, const std::string& what) {
  return Error(ErrorKind::kBadInput, path + ": " + what);
}

std::string layer_path(int64_t index) { return "/layers/" + std::to_string(index); }

std::string find_info_problem(const EstimateFileInfo& info) {
  using detail::concat;
  if (info.heads_q < 1) return concat("heads_q is ", info.heads_q, "; must be >= 1");
  if (info.stride < 1) return concat("stride is ", info.stride, "; must be >= 1");
  if (info.block_size < 1 || info.block_size % info.stride != 0) {
    return concat("block_size ", info.block_size, " must be a positive multiple of stride ",
                  info.stride);
  }
  if (info.len_q.empty() || info.len_q.size() != info.len_k.size()) {
    return concat("len_q (", info.len_q.size(), " items) and len_k (", info.len_k.size(),
                  " items) must give one length per batch item");
  }
  if (info.selection_rule != "smallest" && info.selection_rule != "published")
    return concat("selection_rule '", info.selection_rule, "' is not smallest or published");
  return "";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct EstimateWriter::Impl {
  std::unique_ptr<h5io::LayerFileWriter> out;
  EstimateFileInfo info;
  OutputOptions options;
  std::vector<int64_t> block_dims;  // [nQB, nKB] of the first layer
};

EstimateWriter::EstimateWriter(const std::string& path, EstimateFileInfo info,
                               OutputOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.info = std::move(info);
  s.options = options;
  const std::string problem = find_info_problem(s.info);
  XATTN_CHECK_ARG(problem.empty(), path, ": cannot write this estimate: ", problem);
  XATTN_CHECK_ARG(options.deflate_level >= 0 && options.deflate_level <= 9,
                  "deflate level must be 0..9, got ", options.deflate_level);
  s.out = std::make_unique<h5io::LayerFileWriter>(path, options.overwrite);
  try {
    H5::H5File& f = s.out->file();
    const EstimateFileInfo& i = s.info;
    h5io::write_string(f, "format", kEstimateFormatName);
    h5io::write_ints(f, "format_version", {kEstimateFormatMajor, kEstimateFormatMinor});
    h5io::write_string(f, "source_capture", i.source_capture);
    h5io::write_string(f, "model_name", i.model_name);
    h5io::write_string(f, "source", i.source);
    h5io::write_string(f, "description", i.description);
    h5io::write_int(f, "heads_q", i.heads_q);
    h5io::write_int(f, "stride", i.stride);
    h5io::write_int(f, "block_size", i.block_size);
    h5io::write_bool(f, "causal", i.causal);
    if (i.scale) h5io::write_double(f, "scale", *i.scale);
    h5io::write_ints(f, "len_q", i.len_q);
    h5io::write_ints(f, "len_k", i.len_k);
    h5io::write_bool(f, "has_block_scores", i.has_block_scores);
    h5io::write_string(f, "selection_rule", i.selection_rule);
    h5io::create_group(f, "layers");
  } catch (const H5::Exception& e) {
    throw s.out->failure(e);
  }
}

EstimateWriter::~EstimateWriter() = default;

void EstimateWriter::write_layer(int64_t layer_index, const EstimateLayer& layer) {
  Impl& s = *impl_;
  const EstimateFileInfo& i = s.info;
  s.out->check_new_layer(layer_index);
  XATTN_CHECK_ARG(layer_index >= 0, "layer index ", layer_index, " is negative");
  XATTN_CHECK_ARG(layer.mask.defined(), "layer ", layer_index, ": mask is undefined");
  XATTN_CHECK_ARG(
      layer.mask.dim() == 4 && layer.mask.size(0) == i.batch() && layer.mask.size(1) == i.heads_q,
      "layer ", layer_index, ": mask has shape ", layer.mask.sizes(),
      "; expected [batch = ", i.batch(), ", heads_q = ", i.heads_q, ", nQB, nKB]");
  XATTN_CHECK_ARG(layer.mask.scalar_type() == at::kBool || layer.mask.scalar_type() == at::kByte,
                  "layer ", layer_index, ": mask must be bool or uint8, got ",
                  layer.mask.scalar_type());
  const std::vector<int64_t> dims = layer.mask.sizes().vec();
  if (s.block_dims.empty()) s.block_dims = {dims[2], dims[3]};
  XATTN_CHECK_ARG(dims[2] == s.block_dims[0] && dims[3] == s.block_dims[1], "layer ", layer_index,
                  ": mask has ", dims[2], "x", dims[3], " blocks but earlier layers have ",
                  s.block_dims[0], "x", s.block_dims[1]);
  XATTN_CHECK_ARG(layer.block_scores.defined() == i.has_block_scores, "layer ", layer_index,
                  i.has_block_scores ? ": block_scores missing (has_block_scores = true)"
                                     : ": block_scores given but has_block_scores = false");
  if (layer.block_scores.defined()) {
    XATTN_CHECK_ARG(layer.block_scores.sizes().vec() == dims, "layer ", layer_index,
                    ": block_scores has shape ", layer.block_scores.sizes(), " but mask has ",
                    layer.mask.sizes());
  }
  auto per_head = [&](const at::Tensor& t, const char* name) {
    XATTN_CHECK_ARG(t.defined() && t.dim() == 1 && t.size(0) == i.heads_q &&
                        at::isFloatingType(t.scalar_type()),
                    "layer ", layer_index, ": ", name, " must be a floating [heads_q = ", i.heads_q,
                    "] tensor");
    return t.to(at::kCPU, at::kDouble).contiguous();
  };
  const at::Tensor thresholds = per_head(layer.thresholds, "thresholds");
  const at::Tensor density = per_head(layer.density, "density");
  const at::Tensor mask = layer.mask.to(at::kCPU, at::kByte).contiguous();
  XATTN_CHECK_ARG(mask.le(1).all().item<bool>(), "layer ", layer_index,
                  ": mask values must be 0 or 1");
  const at::Tensor scores = layer.block_scores.defined()
                                ? layer.block_scores.to(at::kCPU, at::kFloat).contiguous()
                                : at::Tensor();

  h5io::quiet_errors();
  try {
    H5::Group group = h5io::create_group(s.out->file(), layer_path(layer_index));
    h5io::write_int(group, "layer_index", layer_index);
    // Masks compress very well; block scores are kept exact.
    const int level = std::max(s.options.deflate_level, 1);
    h5io::create_dataset(group, "mask", H5::PredType::STD_U8LE, dims, level)
        .write(mask.data_ptr(), H5::PredType::NATIVE_UINT8);
    if (scores.defined()) {
      h5io::create_dataset(group, "block_scores", H5::PredType::IEEE_F32LE, dims,
                           s.options.deflate_level)
          .write(scores.data_ptr(), H5::PredType::NATIVE_FLOAT);
    }
    h5io::create_dataset(group, "thresholds", H5::PredType::IEEE_F64LE, {i.heads_q}, 0)
        .write(thresholds.data_ptr(), H5::PredType::NATIVE_DOUBLE);
    h5io::create_dataset(group, "density", H5::PredType::IEEE_F64LE, {i.heads_q}, 0)
        .write(density.data_ptr(), H5::PredType::NATIVE_DOUBLE);
  } catch (const H5::Exception& e) {
    throw s.out->failure(e);
  }
  s.out->mark_written(layer_index);
}

void EstimateWriter::commit() { impl_->out->commit(); }

// ---------------------------------------------------------------------------------------------
// Reader

struct EstimateReader::Impl {
  std::string path;
  std::unique_ptr<H5::H5File> file;
  EstimateFileInfo info;
  std::vector<int64_t> layers;
  std::vector<int64_t> block_dims;  // [batch, heads_q, nQB, nKB]

  void load();
  H5::DataSet dataset(const H5::Group& group, const std::string& where, const std::string& name,
                      const char* dtype) const;
};

H5::DataSet EstimateReader::Impl::dataset(const H5::Group& group, const std::string& where,
                                          const std::string& name, const char* dtype) const {
  if (!group.nameExists(name) || group.childObjType(name) != H5O_TYPE_DATASET) {
    throw bad_input(path, "dataset " + where + "/" + name + " is missing");
  }
  H5::DataSet d = group.openDataSet(name);
  if (!h5io::type_matches(d.getDataType(), dtype)) {
    throw bad_input(path, where + "/" + name + " holds " + h5io::describe_type(d.getDataType()) +
                              "; expected " + dtype);
  }
  return d;
}

void EstimateReader::Impl::load() {
  io::check_readable_file(path, "estimate file");
  if (!H5::H5File::isHdf5(path)) throw bad_input(path, "not an HDF5 file (no HDF5 signature)");
  file = std::make_unique<H5::H5File>(path, H5F_ACC_RDONLY);
  h5io::AttributeReader attrs(*file, path, "");
  if (!attrs.has("format") || attrs.string("format") != kEstimateFormatName) {
    throw bad_input(path, std::string("not an xattn estimate file (format attribute is not '") +
                              kEstimateFormatName + "')");
  }
  const std::vector<int64_t> version = attrs.integers("format_version");
  if (version.size() != 2 || version[0] != kEstimateFormatMajor) {
    throw bad_input(
        path,
        detail::concat("estimate format version ", version.empty() ? -1 : version[0],
                       ".x is not readable by this build (reads ", kEstimateFormatMajor, ".x)"));
  }
  info.format_major = static_cast<int>(version[0]);
  info.format_minor = static_cast<int>(version[1]);
  info.source_capture = attrs.string("source_capture");
  info.model_name = attrs.string("model_name");
  info.source = attrs.string("source");
  info.description = attrs.has("description") ? attrs.string("description") : "";
  info.heads_q = attrs.integer("heads_q");
  info.stride = attrs.integer("stride");
  info.block_size = attrs.integer("block_size");
  info.causal = attrs.boolean("causal");
  if (attrs.has("scale")) info.scale = attrs.real("scale");
  info.len_q = attrs.integers("len_q");
  info.len_k = attrs.integers("len_k");
  info.has_block_scores = attrs.boolean("has_block_scores");
  info.selection_rule = attrs.has("selection_rule") ? attrs.string("selection_rule") : "smallest";
  const std::string problem = find_info_problem(info);
  if (!problem.empty()) throw bad_input(path, problem);

  if (!file->nameExists("layers")) throw bad_input(path, "group /layers is missing");
  H5::Group group = file->openGroup("layers");
  for (hsize_t i = 0; i < group.getNumObjs(); ++i) {
    const std::string name = group.getObjnameByIdx(i);
    const int64_t index = h5io::parse_index(name);
    if (index < 0) throw bad_input(path, "unexpected entry /layers/" + name);
    layers.push_back(index);
  }
  if (layers.empty()) throw bad_input(path, "the file holds no layers");
  std::sort(layers.begin(), layers.end());
  for (int64_t index : layers) {
    const std::string where = layer_path(index);
    H5::Group layer = file->openGroup(where);
    const std::vector<int64_t> dims = h5io::dims_of(dataset(layer, where, "mask", "uint8"));
    if (block_dims.empty()) block_dims = dims;
    if (dims.size() != 4 || dims[0] != info.batch() || dims[1] != info.heads_q ||
        dims != block_dims) {
      throw bad_input(path, where + "/mask has shape " + h5io::format_dims(dims) +
                                "; expected [batch, heads_q, nQB, nKB] as in every layer");
    }
    if (info.has_block_scores &&
        h5io::dims_of(dataset(layer, where, "block_scores", "float32")) != dims) {
      throw bad_input(path, where + "/block_scores and mask differ in shape");
    }
    for (const char* name : {"thresholds", "density"}) {
      if (h5io::dims_of(dataset(layer, where, name, "float64")) !=
          std::vector<int64_t>{info.heads_q}) {
        throw bad_input(path, where + "/" + name + " should have shape [heads_q]");
      }
    }
  }
}

EstimateReader::EstimateReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  h5io::quiet_errors();
  io::check_readable_file(path, "estimate file");
  // The metadata parsed once in a child process: HDF5 1.10 can crash on a damaged file.
  io::h5::check_parses_safely(path, "estimate file", [&] {
    Impl probe;
    probe.path = path;
    probe.load();
  });
  try {
    impl_->load();
  } catch (const H5::Exception& e) {
    std::string cause = h5io::last_error();
    if (cause.empty()) cause = e.getDetailMsg();
    throw bad_input(path, "damaged or truncated HDF5 file (HDF5: " + cause + ")");
  }
}

EstimateReader::~EstimateReader() = default;
EstimateReader::EstimateReader(EstimateReader&&) noexcept = default;
EstimateReader& EstimateReader::operator=(EstimateReader&&) noexcept = default;

const EstimateFileInfo& EstimateReader::info() const { return impl_->info; }
const std::vector<int64_t>& EstimateReader::layer_indices() const { return impl_->layers; }

EstimateLayer EstimateReader::read_layer(int64_t layer_index) const {
  const Impl& s = *impl_;
  XATTN_CHECK_ARG(std::binary_search(s.layers.begin(), s.layers.end(), layer_index), s.path,
                  ": has no layer ", layer_index);
  h5io::quiet_errors();
  try {
    H5::Group group = s.file->openGroup(layer_path(layer_index));
    EstimateLayer layer;
    at::Tensor mask = at::empty(s.block_dims, at::kByte);
    group.openDataSet("mask").read(mask.data_ptr(), H5::PredType::NATIVE_UINT8);
    layer.mask = mask.to(at::kBool);
    if (s.info.has_block_scores) {
      layer.block_scores = at::empty(s.block_dims, at::kFloat);
      group.openDataSet("block_scores")
          .read(layer.block_scores.data_ptr(), H5::PredType::NATIVE_FLOAT);
    }
    layer.thresholds = at::empty({s.info.heads_q}, at::kDouble);
    group.openDataSet("thresholds").read(layer.thresholds.data_ptr(), H5::PredType::NATIVE_DOUBLE);
    layer.density = at::empty({s.info.heads_q}, at::kDouble);
    group.openDataSet("density").read(layer.density.data_ptr(), H5::PredType::NATIVE_DOUBLE);
    return layer;
  } catch (const H5::Exception& e) {
    std::string cause = h5io::last_error();
    if (cause.empty()) cause = e.getDetailMsg();
    throw bad_input(s.path, "damaged HDF5 data (HDF5: " + cause + ")");
  }
}

}  // namespace xattn::io
