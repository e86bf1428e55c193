// Token id files and the byte-level tokenizer; see xattn/model/tokens.h.
#include "xattn/model/tokens.h"

#include <hdf5.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/paths.h"

namespace xattn::model {

namespace {

bool has_hdf5_extension(const std::string& path) {
  const std::string ext = io::extension(path);
  return ext == ".h5" || ext == ".hdf5";
}

// Closes an HDF5 handle on scope exit.
struct H5Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5Handle() {
    if (id >= 0) close(id);
  }
};

std::vector<int64_t> parse_hdf5_ids(const std::string& path, const std::string& dataset) {
  H5Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  XATTN_CHECK_INPUT(file.id >= 0, "'", path,
                    "' is not an HDF5 file or is damaged (HDF5 cannot open it); token ids in a "
                    "*.h5 file need an integer dataset, or give a text file");
  std::string name = dataset;
  if (name.empty()) {
    for (const char* candidate : {"input_ids", "tokens", "ids"}) {
      if (H5Lexists(file.id, candidate, H5P_DEFAULT) > 0) {
        name = candidate;
        break;
      }
    }
    XATTN_CHECK_INPUT(!name.empty(), "HDF5 file '", path,
                      "' has no dataset 'input_ids', 'tokens' or 'ids'; name it with --dataset");
  }
  XATTN_CHECK_INPUT(H5Lexists(file.id, name.c_str(), H5P_DEFAULT) > 0, "HDF5 file '", path,
                    "' has no dataset '", name, "'");
  H5Handle ds{H5Dopen2(file.id, name.c_str(), H5P_DEFAULT), H5Dclose};
  XATTN_CHECK_INPUT(ds.id >= 0, "'", name, "' in '", path, "' is not a dataset");
  H5Handle type{H5Dget_type(ds.id), H5Tclose};
  XATTN_CHECK_INPUT(H5Tget_class(type.id) == H5T_INTEGER, "dataset '", name, "' in '", path,
                    "' must hold integers (token ids)");
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  XATTN_CHECK_INPUT(rank == 1 || rank == 2, "dataset '", name, "' in '", path,
                    "' must be 1-D [len] or 2-D [1, len], has rank ", rank);
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(space.id, dims, nullptr);
  XATTN_CHECK_INPUT(rank == 1 || dims[0] == 1, "dataset '", name, "' in '", path, "' holds ",
                    dims[0], " sequences; the runner takes one (shape [1, len])");
  const hsize_t n = rank == 1 ? dims[0] : dims[1];
  // Far beyond any context length; a larger count is a damaged or hostile file, not a prompt.
  constexpr hsize_t kMaxIds = hsize_t(1) << 26;
  XATTN_CHECK_INPUT(n <= kMaxIds, "dataset '", name, "' in '", path, "' holds ", n,
                    " token ids; the runner takes at most ", kMaxIds);
  std::vector<int64_t> ids(n);
  if (n > 0)
    XATTN_CHECK_INPUT(
        H5Dread(ds.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids.data()) >= 0,
        "cannot read dataset '", name, "' of '", path, "': the file is damaged or truncated");
  return ids;
}

std::vector<int64_t> read_hdf5_ids(const std::string& path, const std::string& dataset) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our messages replace HDF5's stack dumps
  // A file that cannot be reached is I/O (exit 4); one HDF5 cannot open is bad input (exit 3).
  io::check_readable_file(path, "token id file");
  // Parsed once in a child process first: HDF5 1.10 can crash on a damaged file.
  io::h5::check_parses_safely(path, "token id file", [&] { parse_hdf5_ids(path, dataset); });
  return parse_hdf5_ids(path, dataset);
}

// A word of an input file as it may appear in a one-line message: printable ASCII as is, any
// other byte as \xNN (no control bytes reach the terminal, no NUL cuts the message), at most 40
// bytes.
std::string shown(const std::string& word) {
  std::string out;
  for (size_t i = 0; i < word.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(word[i]);
    if (c >= 32 && c < 127 && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char code[8];
      std::snprintf(code, sizeof code, "\\x%02X", c);
      out += code;
    }
  }
  if (word.size() > 40) out += "...";
  return out;
}

}  // namespace

std::vector<int64_t> byte_encode(const std::string& text, bool add_bos) {
  std::vector<int64_t> ids;
  ids.reserve(text.size() + 1);
  if (add_bos) ids.push_back(kByteBos);
  for (unsigned char ch : text) ids.push_back(static_cast<int64_t>(ch));
  return ids;
}

std::string byte_decode(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids)
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  return out;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  XATTN_CHECK(in.good(), ErrorKind::kIo, "cannot read '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<int64_t> read_token_ids(const std::string& path, const std::string& dataset) {
  if (has_hdf5_extension(path)) return read_hdf5_ids(path, dataset);
  const std::string text = read_text_file(path);
  XATTN_CHECK_INPUT(text.find('\0') == std::string::npos, "'", path, "' is a binary file (it ",
                    "holds NUL bytes), not token ids; give a text file of integers, an HDF5 ",
                    "file (*.h5), or raw text (--text in generate and capture, ",
                    "--data-format text in calibrate)");
  std::vector<int64_t> ids;
  size_t i = 0, line = 1;
  while (i < text.size()) {
    const char ch = text[i];
    if (ch == '\n') ++line;
    if (std::isspace(static_cast<unsigned char>(ch)) || ch == ',') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j])) && text[j] != ',')
      ++j;
    const std::string word = text.substr(i, j - i);
    size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    XATTN_CHECK_INPUT(used == word.size() && value >= 0, "'", path, "' line ", line, ": '",
                      shown(word),
                      "' is not a token id (expected non-negative integers separated by spaces, "
                      "newlines or commas; raw text goes with --text in generate and capture, "
                      "--data-format text in calibrate)");
    ids.push_back(value);
    i = j;
  }
  XATTN_CHECK_INPUT(!ids.empty(), "'", path, "' holds no token ids");
  return ids;
}

}  // namespace xattn::model
