// safetensors reader (mmap) and atomic writer; see xattn/model/safetensors.h.
#include "xattn/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::model {

namespace {

using nlohmann::json;

// Largest header we accept (the format's own reference limits it to 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  const char* name;
  int64_t element_size;
  bool loadable;
  at::ScalarType scalar_type;
};

// Every dtype name of the format; only the loadable ones become tensors.
const DTypeEntry kDTypes[] = {
    {"BF16", 2, true, at::kBFloat16},   {"F16", 2, true, at::kHalf},
    {"F32", 4, true, at::kFloat},       {"F64", 8, true, at::kDouble},
    {"I64", 8, true, at::kLong},        {"I32", 4, true, at::kInt},
    {"U8", 1, true, at::kByte},         {"I8", 1, false, at::kChar},
    {"I16", 2, false, at::kShort},      {"U16", 2, false, at::kShort},
    {"U32", 4, false, at::kInt},        {"U64", 8, false, at::kLong},
    {"BOOL", 1, false, at::kBool},      {"F8_E4M3", 1, false, at::kByte},
    {"F8_E5M2", 1, false, at::kByte},
};

const DTypeEntry* find_dtype(const std::string& name) {
  for (const auto& e : kDTypes)
    if (name == e.name) return &e;
  return nullptr;
}

std::string loadable_list() {
  std::string out;
  for (const auto& e : kDTypes) {
    if (!e.loadable) continue;
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

namespace {

// The format's layout rule: sorted by offset, the tensors tile the data section exactly, each
// byte belonging to one tensor (no overlap, no gap, nothing after the last one), as the format's
// reference implementation requires. Overlapping tensors would alias each other's weights; gaps
// can hide other content (polyglot files).
void check_layout(const std::map<std::string, TensorInfo>& tensors, uint64_t data_size,
                  const std::string& path) {
  std::vector<std::pair<const std::string*, const TensorInfo*>> order;
  for (const auto& [name, info] : tensors) order.emplace_back(&name, &info);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second->begin, a.second->end) <
           std::make_pair(b.second->begin, b.second->end);
  });
  uint64_t cursor = 0;
  const std::string* previous = nullptr;
  auto range = [](const TensorInfo& t) { return detail::concat("[", t.begin, ", ", t.end, ")"); };
  for (const auto& [name, info] : order) {
    if (info->begin < cursor) {
      throw Error(ErrorKind::kBadInput,
                  detail::concat("safetensors file '", path, "': tensors '", *previous, "' ",
                                 range(tensors.at(*previous)), " and '", *name, "' ",
                                 range(*info),
                                 " overlap in the data section (each byte must belong to one "
                                 "tensor); the file is damaged or was written by a faulty tool"));
    }
    if (info->begin > cursor) {
      throw Error(ErrorKind::kBadInput,
                  detail::concat("safetensors file '", path, "': bytes [", cursor, ", ",
                                 info->begin, ") of the data section belong to no tensor (",
                                 previous ? "between tensor '" + *previous + "' and" : "before",
                                 " tensor '", *name,
                                 "'); the format forbids gaps: the file is damaged or was "
                                 "written by a faulty tool"));
    }
    cursor = info->end;
    previous = name;
  }
  if (cursor != data_size) {
    throw Error(ErrorKind::kBadInput,
                detail::concat("safetensors file '", path, "': bytes [", cursor, ", ", data_size,
                               ") of the data section belong to no tensor (",
                               previous ? "after the last one, '" + *previous + "'"
                                        : "the header lists none",
                               "); the format forbids trailing data: the file is damaged or "
                               "was written by a faulty tool"));
  }
}

}  // namespace

SafetensorsIndex parse_safetensors(const uint8_t* bytes, uint64_t file_size,
                                   const std::string& path) {
  XATTN_CHECK_INPUT(file_size >= 8, "safetensors file '", path, "' is truncated: ", file_size,
                    " bytes, less than the 8-byte header length");
  SafetensorsIndex index;
  const uint64_t header_size = read_u64_le(bytes);
  XATTN_CHECK_INPUT(header_size <= kMaxHeaderBytes, "safetensors file '", path,
                    "' declares a header of ", header_size,
                    " bytes (limit 100 MB): not a safetensors file or corrupted");
  XATTN_CHECK_INPUT(header_size <= file_size - 8, "safetensors file '", path,
                    "' is truncated: its header needs ", header_size, " bytes but only ",
                    file_size - 8, " follow the length field");
  const uint64_t data_size = file_size - 8 - header_size;
  index.data_offset = 8 + header_size;

  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kBadInput,
                detail::concat("safetensors file '", path, "' has a malformed JSON header: ",
                               e.what()));
  }
  XATTN_CHECK_INPUT(header.is_object(), "safetensors file '", path,
                    "': the header must be a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      XATTN_CHECK_INPUT(entry.is_object(), "safetensors file '", path,
                        "': __metadata__ must be an object of strings");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        XATTN_CHECK_INPUT(m.value().is_string(), "safetensors file '", path,
                          "': __metadata__ key '", m.key(), "' is not a string");
        index.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = detail::concat("tensor '", name, "' in '", path, "'");
    XATTN_CHECK_INPUT(entry.is_object(), where, ": header entry must be an object");
    XATTN_CHECK_INPUT(entry.contains("dtype") && entry["dtype"].is_string(), where,
                      ": missing or non-string key 'dtype'");
    XATTN_CHECK_INPUT(entry.contains("shape") && entry["shape"].is_array(), where,
                      ": missing or non-array key 'shape'");
    XATTN_CHECK_INPUT(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                          entry["data_offsets"].size() == 2,
                      where, ": key 'data_offsets' must be an array [begin, end]");
    TensorInfo info;
    info.dtype = entry["dtype"].get<std::string>();
    const DTypeEntry* dt = find_dtype(info.dtype);
    XATTN_CHECK_INPUT(dt != nullptr, where, " has unknown dtype '", info.dtype,
                      "' (known: BF16, F16, F32, F64, I64, I32, U8, ...)");
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      XATTN_CHECK_INPUT(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                        where, ": shape entries must be non-negative integers");
      const uint64_t extent = d.get<uint64_t>();
      XATTN_CHECK_INPUT(extent == 0 || numel <= (1ull << 62) / extent, where,
                        ": shape is too large");
      numel *= extent;
      info.shape.push_back(static_cast<int64_t>(extent));
    }
    for (const auto& o : entry["data_offsets"])
      XATTN_CHECK_INPUT(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                        where, ": data_offsets must be non-negative integers");
    info.begin = entry["data_offsets"][0].get<uint64_t>();
    info.end = entry["data_offsets"][1].get<uint64_t>();
    XATTN_CHECK_INPUT(info.begin <= info.end, where, ": data_offsets [", info.begin, ", ",
                      info.end, "] are reversed");
    XATTN_CHECK_INPUT(info.end <= data_size, where, " is truncated: its bytes end at offset ",
                      info.end, " but the data section has only ", data_size,
                      " bytes (incomplete download or copy?)");
    const uint64_t expected = numel * static_cast<uint64_t>(dt->element_size);
    XATTN_CHECK_INPUT(info.end - info.begin == expected, where, ": shape ",
                      shape_string(info.shape), " of ", info.dtype, " needs ", expected,
                      " bytes but data_offsets span ", info.end - info.begin);
    index.tensors.emplace(name, std::move(info));
  }
  check_layout(index.tensors, data_size, path);
  return index;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  XATTN_CHECK(fd >= 0, ErrorKind::kIo, "cannot open safetensors file '", path,
              "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorKind::kIo, detail::concat("cannot stat '", path, "': ", std::strerror(err)));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw Error(ErrorKind::kBadInput,
                detail::concat("safetensors file '", path, "' is truncated: ", file_size,
                               " bytes, less than the 8-byte header length"));
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  XATTN_CHECK(mapping != MAP_FAILED, ErrorKind::kIo, "cannot map '", path,
              "': ", std::strerror(errno));
  mapping_ = mapping;
  mapping_size_ = file_size;
  const auto* bytes = static_cast<const uint8_t*>(mapping);
  try {
    SafetensorsIndex index = parse_safetensors(bytes, file_size, path);
    tensors_ = std::move(index.tensors);
    metadata_ = std::move(index.metadata);
    data_ = bytes + index.data_offset;
  } catch (...) {
    ::munmap(mapping_, mapping_size_);
    mapping_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(mapping_, mapping_size_);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  XATTN_CHECK_INPUT(it != tensors_.end(), "safetensors file '", path_, "' has no tensor '", name,
                    "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

at::Tensor SafetensorsFile::load(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const DTypeEntry* dt = find_dtype(ti.dtype);
  XATTN_CHECK_INPUT(dt && dt->loadable, "tensor '", name, "' in '", path_, "' has dtype '",
                    ti.dtype, "', which the runner cannot load (supported: ", loadable_list(),
                    ")");
  at::Tensor out = at::empty(ti.shape, at::TensorOptions().dtype(dt->scalar_type));
  if (ti.end > ti.begin) std::memcpy(out.data_ptr(), data_ + ti.begin, ti.end - ti.begin);
  return out;
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  XATTN_CHECK(io::is_directory(dir), ErrorKind::kIo, "model folder '", dir,
              "' does not exist or is not a folder");
  std::vector<std::string> file_names;
  const std::string index_path = io::join_path(dir, "model.safetensors.index.json");
  std::map<std::string, std::string> weight_map;
  if (io::path_exists(index_path)) {
    std::ifstream in(index_path);
    XATTN_CHECK(in.good(), ErrorKind::kIo, "cannot read '", index_path, "'");
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      throw Error(ErrorKind::kBadInput,
                  detail::concat("'", index_path, "' is not valid JSON: ", e.what()));
    }
    XATTN_CHECK_INPUT(index.is_object() && index.contains("weight_map") &&
                          index["weight_map"].is_object(),
                      "'", index_path, "' has no object key 'weight_map'");
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      XATTN_CHECK_INPUT(it.value().is_string(), "'", index_path, "': weight_map entry '",
                        it.key(), "' is not a file name");
      const std::string file = it.value().get<std::string>();
      weight_map[it.key()] = file;
      if (std::find(file_names.begin(), file_names.end(), file) == file_names.end())
        file_names.push_back(file);
    }
  } else if (io::path_exists(io::join_path(dir, "model.safetensors"))) {
    file_names.push_back("model.safetensors");
  } else {
    for (const std::string& name : io::folder_entries(dir))  // sorted
      if (io::extension(name) == ".safetensors") file_names.push_back(name);
  }
  XATTN_CHECK_INPUT(!file_names.empty(), "model folder '", dir,
                    "' has no model.safetensors, no model.safetensors.index.json and no other "
                    "*.safetensors file");
  for (const auto& f : file_names) {
    const std::string p = io::join_path(dir, f);
    XATTN_CHECK(io::path_exists(p), ErrorKind::kIo, "shard '", f, "' named by '",
                index_path, "' is missing from '", dir, "'");
    files_.push_back(std::make_unique<SafetensorsFile>(p));
    if (!searched_.empty()) searched_ += ", ";
    searched_ += f;
  }
  for (size_t i = 0; i < files_.size(); ++i)
    for (const auto& name : files_[i]->names()) where_.emplace(name, i);
  // The index must agree with the shards, so a wrong index is reported rather than half-used.
  for (const auto& [name, file] : weight_map) {
    auto it = where_.find(name);
    XATTN_CHECK_INPUT(it != where_.end(), "tensor '", name, "' is listed in '",
                      index_path, "' under '", file, "' but that shard does not hold it");
  }
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  XATTN_CHECK_INPUT(it != where_.end(), "checkpoint '", dir_, "' has no tensor '", name,
                    "' (searched ", searched_, ")");
  return files_[it->second]->info(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

at::Tensor Checkpoint::load(const std::string& name) const {
  auto it = where_.find(name);
  XATTN_CHECK_INPUT(it != where_.end(), "checkpoint '", dir_, "' has no tensor '", name,
                    "' (searched ", searched_, ")");
  return files_[it->second]->load(name);
}

const TensorInfo& Checkpoint::check_shape(const std::string& name,
                                          const std::vector<int64_t>& shape,
                                          const std::string& what_sets_it) const {
  const TensorInfo& ti = info(name);
  XATTN_CHECK_INPUT(ti.shape == shape, "tensor '", name, "' has shape ", shape_string(ti.shape),
                    " but config.json implies ", shape_string(shape), " (", what_sets_it,
                    "): config.json and the weights do not belong together");
  return ti;
}

at::Tensor Checkpoint::load_checked(const std::string& name, const std::vector<int64_t>& shape,
                                    const std::string& what_sets_it) const {
  check_shape(name, shape, what_sets_it);
  return load(name);
}

std::string safetensors_dtype(at::ScalarType type) {
  for (const auto& e : kDTypes)
    if (e.loadable && e.scalar_type == type) return e.name;
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("cannot write dtype ", c10::toString(type),
                             " to safetensors (supported: ", loadable_list(), ")"));
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    XATTN_CHECK_ARG(name != "__metadata__" && !header.contains(name), "tensor name '", name,
                    "' is reserved or repeated");
    at::Tensor t = tensor.to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(t);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // keeps tensor data 8-byte aligned

  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot create '", temp, "'");
    uint8_t length[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : blobs)
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    out.flush();
    XATTN_CHECK(out.good(), ErrorKind::kIo, "write to '", temp, "' failed (disk full?)");
  });
}

}  // namespace xattn::model
