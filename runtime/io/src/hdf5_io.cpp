#include "hdf5_io.h"

#include <unistd.h>

#include <atomic>
#include <system_error>

#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::io::h5io {

namespace {

thread_local std::string g_last_error;

herr_t remember_innermost(unsigned n, const H5E_error2_t* err, void* client) {
  // The upward walk starts at the innermost frame: the specific cause.
  if (n == 0 && err != nullptr && err->desc != nullptr) {
    *static_cast<std::string*>(client) = err->desc;
  }
  return 0;
}

herr_t on_hdf5_error(hid_t stack, void*) {
  std::string message;
  H5Ewalk2(stack, H5E_WALK_UPWARD, remember_innermost, &message);
  if (!message.empty()) g_last_error = message;
  return 0;
}

}  // namespace

void quiet_errors() {
  g_last_error.clear();
  H5Eset_auto2(H5E_DEFAULT, on_hdf5_error, nullptr);
}

std::string last_error() { return g_last_error; }

H5::FloatType float16_type() {
  H5::FloatType type(H5::PredType::IEEE_F32LE);
  // sign bit 15, exponent bits 10..14, mantissa bits 0..9, bias 15: IEEE 754 binary16.
  type.setFields(15, 10, 5, 0, 10);
  type.setSize(2);
  type.setEbias(15);
  return type;
}

H5::DataType file_type_of(const std::string& dtype_name) {
  if (dtype_name == "float32") return H5::PredType::IEEE_F32LE;
  if (dtype_name == "float16") return float16_type();
  if (dtype_name == "bfloat16") return H5::PredType::STD_U16LE;
  if (dtype_name == "float64") return H5::PredType::IEEE_F64LE;
  if (dtype_name == "uint8") return H5::PredType::STD_U8LE;
  throw Error(ErrorKind::kInternal, "no HDF5 type for dtype '" + dtype_name + "'");
}

bool type_matches(const H5::DataType& type, const std::string& dtype_name) {
  const H5T_class_t cls = type.getClass();
  const size_t size = type.getSize();
  if (dtype_name == "bfloat16" || dtype_name == "uint16" || dtype_name == "uint8") {
    if (cls != H5T_INTEGER) return false;
    const size_t want = dtype_name == "uint8" ? 1 : 2;
    return size == want && H5Tget_sign(type.getId()) == H5T_SGN_NONE;
  }
  if (cls != H5T_FLOAT) return false;
  // Plain C calls on the borrowed id: no wrapper that could close it.
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type.getId(), &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  const size_t bias = H5Tget_ebias(type.getId());
  if (dtype_name == "float32") {
    return size == 4 && spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23 &&
           bias == 127;
  }
  if (dtype_name == "float16") {
    return size == 2 && spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 &&
           bias == 15;
  }
  if (dtype_name == "float64") {
    return size == 8 && spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52 &&
           bias == 1023;
  }
  return false;
}

std::string describe_type(const H5::DataType& type) {
  std::string kind;
  switch (type.getClass()) {
    case H5T_INTEGER:
      kind = "integer";
      break;
    case H5T_FLOAT:
      kind = "float";
      break;
    case H5T_STRING:
      kind = "string";
      break;
    case H5T_OPAQUE:
      kind = "opaque";
      break;
    case H5T_COMPOUND:
      kind = "compound";
      break;
    case H5T_ENUM:
      kind = "enum";
      break;
    default:
      kind = "other";
      break;
  }
  return kind + " of " + std::to_string(type.getSize()) + " bytes";
}

void write_string(H5::H5Object& obj, const std::string& name, const std::string& value) {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  H5::Attribute attr = obj.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
  attr.write(type, value);
}

void write_int(H5::H5Object& obj, const std::string& name, int64_t value) {
  H5::Attribute attr =
      obj.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR));
  attr.write(H5::PredType::NATIVE_INT64, &value);
}

void write_ints(H5::H5Object& obj, const std::string& name, const std::vector<int64_t>& values) {
  const hsize_t n = values.size();
  H5::Attribute attr = obj.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(1, &n));
  attr.write(H5::PredType::NATIVE_INT64, values.data());
}

void write_double(H5::H5Object& obj, const std::string& name, double value) {
  H5::Attribute attr =
      obj.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(H5S_SCALAR));
  attr.write(H5::PredType::NATIVE_DOUBLE, &value);
}

void write_bool(H5::H5Object& obj, const std::string& name, bool value) {
  const uint8_t byte = value ? 1 : 0;
  H5::Attribute attr = obj.createAttribute(name, H5::PredType::STD_U8LE, H5::DataSpace(H5S_SCALAR));
  attr.write(H5::PredType::NATIVE_UINT8, &byte);
}

AttributeReader::AttributeReader(const H5::H5Object& obj, std::string file, std::string where)
    : obj_(obj), file_(std::move(file)), where_(std::move(where)) {}

bool AttributeReader::has(const std::string& name) const { return obj_.attrExists(name); }

void AttributeReader::fail(const std::string& name, const std::string& what) const {
  throw Error(ErrorKind::kBadInput, file_ + ": " + where_ + "attribute '" + name + "' " + what);
}

H5::Attribute AttributeReader::open(const std::string& name, H5T_class_t expected_class,
                                    const char* kind) const {
  if (!obj_.attrExists(name)) fail(name, "is missing");
  H5::Attribute attr = obj_.openAttribute(name);
  const H5T_class_t cls = attr.getTypeClass();
  const bool numeric_ok = expected_class == H5T_FLOAT && cls == H5T_INTEGER;
  if (cls != expected_class && !numeric_ok) {
    fail(name, std::string("should be ") + kind + " but is " + describe_type(attr.getDataType()));
  }
  return attr;
}

std::string AttributeReader::string(const std::string& name) const {
  H5::Attribute attr = open(name, H5T_STRING, "a string");
  std::string value;
  attr.read(attr.getStrType(), value);
  // Fixed-length strings may carry NUL padding.
  const auto end = value.find('\0');
  if (end != std::string::npos) value.resize(end);
  return value;
}

int64_t AttributeReader::integer(const std::string& name) const {
  H5::Attribute attr = open(name, H5T_INTEGER, "an integer");
  if (attr.getSpace().getSimpleExtentNpoints() != 1) fail(name, "should hold one value");
  int64_t value = 0;
  attr.read(H5::PredType::NATIVE_INT64, &value);
  return value;
}

std::vector<int64_t> AttributeReader::integers(const std::string& name) const {
  H5::Attribute attr = open(name, H5T_INTEGER, "an integer array");
  const hssize_t n = attr.getSpace().getSimpleExtentNpoints();
  if (attr.getSpace().getSimpleExtentNdims() > 1) fail(name, "should be one-dimensional");
  std::vector<int64_t> values(static_cast<size_t>(n));
  if (n > 0) attr.read(H5::PredType::NATIVE_INT64, values.data());
  return values;
}

double AttributeReader::real(const std::string& name) const {
  H5::Attribute attr = open(name, H5T_FLOAT, "a number");
  if (attr.getSpace().getSimpleExtentNpoints() != 1) fail(name, "should hold one value");
  double value = 0;
  attr.read(H5::PredType::NATIVE_DOUBLE, &value);
  return value;
}

bool AttributeReader::boolean(const std::string& name) const {
  if (!obj_.attrExists(name)) fail(name, "is missing");
  H5::Attribute attr = obj_.openAttribute(name);
  if (attr.getSpace().getSimpleExtentNpoints() != 1) fail(name, "should hold one value");
  const H5T_class_t cls = attr.getTypeClass();
  int64_t value = -1;
  if (cls == H5T_INTEGER) {
    attr.read(H5::PredType::NATIVE_INT64, &value);
  } else if (cls == H5T_ENUM && attr.getDataType().getSize() == 1) {
    // numpy bool as h5py writes it: an int8 enum FALSE = 0, TRUE = 1.
    int8_t byte = -1;
    attr.read(attr.getDataType(), &byte);
    value = byte;
  } else {
    fail(name, "should be 0 or 1 but is " + describe_type(attr.getDataType()));
  }
  if (value != 0 && value != 1) fail(name, "should be 0 or 1, got " + std::to_string(value));
  return value == 1;
}

std::vector<int64_t> dims_of(const H5::DataSet& dataset) {
  H5::DataSpace space = dataset.getSpace();
  const int rank = space.getSimpleExtentNdims();
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) space.getSimpleExtentDims(dims.data());
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string format_dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(dims[i]);
  }
  return out + "]";
}

H5::DataSet create_dataset(H5::Group& group, const std::string& name, const H5::DataType& type,
                           const std::vector<int64_t>& dims, int deflate_level) {
  std::vector<hsize_t> shape(dims.begin(), dims.end());
  H5::DataSpace space(static_cast<int>(shape.size()), shape.data());
  H5::DSetCreatPropList props;
  H5Pset_obj_track_times(props.getId(), 0);  // no timestamps: same input, same bytes
  if (deflate_level > 0) {
    std::vector<hsize_t> chunk = shape;
    for (size_t i = 0; i + 2 < chunk.size(); ++i) chunk[i] = 1;
    props.setChunk(static_cast<int>(chunk.size()), chunk.data());
    props.setShuffle();
    props.setDeflate(deflate_level);
  }
  return group.createDataSet(name, type, space, props);
}

H5::Group create_group(H5::Group& parent, const std::string& name) {
  const hid_t props = H5Pcreate(H5P_GROUP_CREATE);
  H5Pset_obj_track_times(props, 0);
  const hid_t id = H5Gcreate2(parent.getId(), name.c_str(), H5P_DEFAULT, props, H5P_DEFAULT);
  H5Pclose(props);
  if (id < 0) throw H5::GroupIException("create_group", "H5Gcreate2 failed for " + name);
  H5Gclose(id);
  return parent.openGroup(name);
}

AtomicOutput::AtomicOutput(std::string path, bool overwrite)
    : path_(std::move(path)), overwrite_(overwrite) {
  io::check_writable(path_, overwrite_);
  temp_path_ = io::temporary_path_for(path_);
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) io::discard_temporary(temp_path_);
}

void AtomicOutput::commit() {
  io::move_into_place(temp_path_, path_, overwrite_);
  committed_ = true;
}

LayerFileWriter::LayerFileWriter(const std::string& path, bool overwrite)
    : output_(path, overwrite) {
  quiet_errors();
  try {
    file_ = std::make_unique<H5::H5File>(output_.temp_path(), H5F_ACC_EXCL);
  } catch (const H5::Exception& e) {
    throw failure(e);
  }
}

LayerFileWriter::~LayerFileWriter() = default;

void LayerFileWriter::check_new_layer(int64_t layer_index) const {
  XATTN_CHECK_ARG(!committed_, path(), ": write_layer after commit()");
  XATTN_CHECK_ARG(!written_.count(layer_index), "layer ", layer_index, " was already written");
}

Error LayerFileWriter::failure(const H5::Exception& e) const {
  std::string cause = last_error();
  if (cause.empty()) cause = e.getDetailMsg();
  return Error(ErrorKind::kIo, path() + ": writing failed (HDF5: " + cause + ")");
}

void LayerFileWriter::commit() {
  XATTN_CHECK_ARG(!committed_, path(), ": commit() called twice");
  XATTN_CHECK_ARG(!written_.empty(), path(), ": no layer written; nothing to commit");
  quiet_errors();
  try {
    file_->close();
  } catch (const H5::Exception& e) {
    throw failure(e);
  }
  output_.commit();
  committed_ = true;
}

int64_t parse_index(const std::string& name) {
  if (name.empty() || name.size() > 9) return -1;
  int64_t value = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return -1;
    value = value * 10 + (c - '0');
  }
  if (name.size() > 1 && name[0] == '0') return -1;
  return value;
}

}  // namespace xattn::io::h5io
