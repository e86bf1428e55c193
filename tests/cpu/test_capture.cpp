// Capture format and estimate output file: bit-exact round trips for every dtype, and every kind
// of bad file rejected with a kBadInput message that names the file and the problem.
#include <H5Cpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "scratch.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/estimate_file.h"

namespace xattn::io {
namespace {

using test_files::copy_file;
using test_files::truncate_file;

class CaptureFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = std::make_unique<test_files::ScratchFolder>("xattn-capture-");
  }
  void TearDown() override { folder_.reset(); }
  std::string file(const std::string& name) const { return folder_->file(name); }
  // Files in the folder, to catch temporary files left behind.
  size_t entries() const { return size_t(folder_->entry_count()); }
  std::string folder() const { return folder_->path(); }
  std::unique_ptr<test_files::ScratchFolder> folder_;
};

CaptureInfo small_info(at::ScalarType dtype) {
  CaptureInfo info;
  info.model_name = "test-model";
  info.source = "python-hook";
  info.description = "round trip";
  info.dtype = dtype;
  info.num_layers = 4;
  info.heads_q = 4;
  info.heads_kv = 2;
  info.head_dim = 16;
  info.causal = true;
  info.has_v = true;
  info.len_q = {7, 5};
  info.len_k = {19, 12};
  info.position_offset = {0, 100};
  info.padded_len_q = 9;  // longer than every item: padding at the end
  info.padded_len_k = 19;
  return info;
}

// Random values plus the awkward ones (inf, -0, subnormal, NaN payloads survive bitwise).
at::Tensor random_tensor(std::vector<int64_t> shape, at::ScalarType dtype) {
  at::Tensor t = at::randn(shape, at::kFloat).mul_(3).to(dtype);
  at::Tensor flat = t.view({-1});
  flat[0] = std::numeric_limits<float>::infinity();
  flat[1] = -0.0f;
  flat[2] = 1e-40f;
  flat[3] = std::numeric_limits<float>::quiet_NaN();
  return t;
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::ScalarType bits = a.element_size() == 4 ? at::kInt : at::kShort;
  return at::equal(a.contiguous().view(bits), b.contiguous().view(bits));
}

struct WrittenLayer {
  at::Tensor q, k, v;
};

std::map<int64_t, WrittenLayer> write_sample(const std::string& path, const CaptureInfo& info,
                                             OutputOptions options = {}) {
  CaptureWriter writer(path, info, options);
  std::map<int64_t, WrittenLayer> layers;
  for (int64_t index : {3, 0}) {
    WrittenLayer l;
    l.q = random_tensor({2, info.heads_q, info.padded_len_q, info.head_dim}, info.dtype);
    l.k = random_tensor({2, info.heads_kv, info.padded_len_k, info.head_dim}, info.dtype);
    if (info.has_v)
      l.v = random_tensor({2, info.heads_kv, info.padded_len_k, info.head_dim}, info.dtype);
    writer.write_layer(index, l.q, l.k, l.v);
    layers[index] = l;
  }
  writer.commit();
  return layers;
}

template <typename F>
void expect_error(F&& action, ErrorKind kind, const std::vector<std::string>& needles) {
  try {
    action();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message lacks '" << needle << "': " << e.what();
    }
  }
}

void expect_bad_capture(const std::string& path, const std::vector<std::string>& needles) {
  std::vector<std::string> all = needles;
  all.push_back(path);
  expect_error([&] { CaptureReader reader(path); }, ErrorKind::kBadInput, all);
}

class CaptureRoundTrip : public CaptureFileTest,
                         public ::testing::WithParamInterface<at::ScalarType> {};

TEST_P(CaptureRoundTrip, BitExactWithAllAttributes) {
  const at::ScalarType dtype = GetParam();
  CaptureInfo info = small_info(dtype);
  info.video = VideoShape{2, 3, 3};
  const std::string path = file("capture.h5");
  const auto written = write_sample(path, info);

  const CaptureReader reader(path);
  const CaptureInfo& r = reader.info();
  EXPECT_EQ(r.model_name, info.model_name);
  EXPECT_EQ(r.source, info.source);
  EXPECT_EQ(r.description, info.description);
  EXPECT_EQ(r.dtype, dtype);
  EXPECT_EQ(r.num_layers, 4);
  EXPECT_EQ(r.heads_q, 4);
  EXPECT_EQ(r.heads_kv, 2);
  EXPECT_EQ(r.head_dim, 16);
  EXPECT_TRUE(r.causal);
  EXPECT_TRUE(r.has_v);
  EXPECT_EQ(r.len_q, info.len_q);
  EXPECT_EQ(r.len_k, info.len_k);
  EXPECT_EQ(r.position_offset, info.position_offset);
  EXPECT_EQ(r.padded_len_q, 9);
  EXPECT_EQ(r.padded_len_k, 19);
  ASSERT_TRUE(r.video.has_value());
  EXPECT_EQ(r.video->frames, 2);
  EXPECT_EQ(r.video->width, 3);
  EXPECT_EQ(r.format_major, kCaptureFormatMajor);
  EXPECT_EQ(reader.layer_indices(), (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(reader.has_layer(3));
  EXPECT_FALSE(reader.has_layer(1));
  for (const auto& [index, layer] : written) {
    const CaptureLayer got = reader.read_layer(index);
    EXPECT_EQ(got.q.scalar_type(), dtype);
    EXPECT_TRUE(bitwise_equal(got.q, layer.q)) << "layer " << index;
    EXPECT_TRUE(bitwise_equal(got.k, layer.k)) << "layer " << index;
    EXPECT_TRUE(bitwise_equal(got.v, layer.v)) << "layer " << index;
  }
  expect_error([&] { reader.read_layer(1); }, ErrorKind::kInvalidArgument, {"no layer 1"});
  // One item, without padding: the same values as the slice of the whole layer.
  for (int64_t b = 0; b < 2; ++b) {
    const CaptureLayer item = reader.read_layer_item(3, b);
    const WrittenLayer& all = written.at(3);
    EXPECT_TRUE(bitwise_equal(item.q, all.q.slice(0, b, b + 1).slice(2, 0, info.len_q[b])));
    EXPECT_TRUE(bitwise_equal(item.k, all.k.slice(0, b, b + 1).slice(2, 0, info.len_k[b])));
    EXPECT_TRUE(bitwise_equal(item.v, all.v.slice(0, b, b + 1).slice(2, 0, info.len_k[b])));
  }
  expect_error([&] { reader.read_layer_item(3, 2); }, ErrorKind::kInvalidArgument,
               {"no batch item 2"});
  EXPECT_EQ(entries(), 1u) << "temporary file left behind";
}

TEST_P(CaptureRoundTrip, CompressedWithoutV) {
  CaptureInfo info = small_info(GetParam());
  info.has_v = false;
  const std::string path = file("compressed.h5");
  OutputOptions options;
  options.deflate_level = 6;
  const auto written = write_sample(path, info, options);
  const CaptureReader reader(path);
  EXPECT_FALSE(reader.info().has_v);
  const CaptureLayer got = reader.read_layer(3);
  EXPECT_TRUE(bitwise_equal(got.q, written.at(3).q));
  EXPECT_TRUE(bitwise_equal(got.k, written.at(3).k));
  EXPECT_FALSE(got.v.defined());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CaptureRoundTrip,
                         ::testing::Values(at::kFloat, at::kHalf, at::kBFloat16),
                         [](const auto& p) { return std::string(capture_dtype_name(p.param)); });

// The documented encodings, as an independent HDF5 reader (h5py) sees them.
TEST_F(CaptureFileTest, StoredTypesAreTheDocumentedOnes) {
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const std::string path = file(std::string("types-") + capture_dtype_name(dtype) + ".h5");
    write_sample(path, small_info(dtype));
    H5::H5File f(path, H5F_ACC_RDONLY);
    H5::DataSet q = f.openDataSet("/layers/0/q");
    const H5::DataType type = q.getDataType();
    if (dtype == at::kBFloat16) {
      EXPECT_EQ(type.getClass(), H5T_INTEGER);
      EXPECT_TRUE(type == H5::PredType::STD_U16LE);
      std::string marker;
      H5::Attribute a = q.openAttribute("dtype");
      a.read(a.getStrType(), marker);
      EXPECT_EQ(marker, "bfloat16");
    } else if (dtype == at::kHalf) {
      ASSERT_EQ(type.getClass(), H5T_FLOAT);
      H5::FloatType ft = q.getFloatType();
      size_t spos, epos, esize, mpos, msize;
      ft.getFields(spos, epos, esize, mpos, msize);
      EXPECT_EQ(ft.getSize(), 2u);
      EXPECT_EQ(ft.getOrder(), H5T_ORDER_LE);
      EXPECT_EQ(spos, 15u);
      EXPECT_EQ(epos, 10u);
      EXPECT_EQ(esize, 5u);
      EXPECT_EQ(mpos, 0u);
      EXPECT_EQ(msize, 10u);
      EXPECT_EQ(ft.getEbias(), 15u);
      // HDF5's own conversion to float32 agrees with ATen's: the type really is IEEE half.
      at::Tensor as_float = at::empty({2, 4, 9, 16}, at::kFloat);
      q.read(as_float.data_ptr(), H5::PredType::NATIVE_FLOAT);
      const at::Tensor stored = CaptureReader(path).read_layer(0).q.to(at::kFloat);
      EXPECT_TRUE(at::allclose(as_float, stored, 0, 0, /*equal_nan=*/true));
    } else {
      EXPECT_TRUE(type == H5::PredType::IEEE_F32LE);
    }
  }
}

// Edits a valid file with plain HDF5 calls, then expects the reader to name the problem.
class BadCaptureTest : public CaptureFileTest {
 protected:
  std::string valid(const std::string& name) {
    const std::string path = file(name);
    write_sample(path, small_info(at::kHalf));
    return path;
  }
  static void replace_ints(H5::H5File& f, const std::string& name, std::vector<int64_t> values) {
    f.removeAttr(name);
    const hsize_t n = values.size();
    f.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(1, &n))
        .write(H5::PredType::NATIVE_INT64, values.data());
  }
  static void replace_int(H5::H5File& f, const std::string& name, int64_t value) {
    f.removeAttr(name);
    f.createAttribute(name, H5::PredType::STD_I64LE, H5::DataSpace(H5S_SCALAR))
        .write(H5::PredType::NATIVE_INT64, &value);
  }
};

// A file that cannot be read is an I/O error (exit 4), one whose content is wrong bad input (3).
TEST_F(BadCaptureTest, MissingFileAndNotHdf5) {
  const std::string absent = file("absent.h5");
  expect_error([&] { CaptureReader reader(absent); }, ErrorKind::kIo, {"no such file", absent});
  const std::string text = file("text.h5");
  std::ofstream(text) << "q,k,v\n1,2,3\n";
  expect_bad_capture(text, {"not an HDF5 file"});
  expect_error([&] { CaptureReader reader(folder()); }, ErrorKind::kIo, {"is a folder"});
}

TEST_F(BadCaptureTest, TruncatedFile) {
  const std::string path = valid("full.h5");
  const std::string cut = file("cut.h5");
  copy_file(path, cut);
  truncate_file(cut, io::file_size(path) / 2);
  expect_bad_capture(cut, {"truncated"});
  // Cut inside the header too.
  truncate_file(cut, 600);
  expect_bad_capture(cut, {"truncated"});
}

TEST_F(BadCaptureTest, MissingDataset) {
  const std::string path = valid("missing.h5");
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    f.unlink("/layers/3/k");
  }
  expect_bad_capture(path, {"/layers/3/k", "missing"});
}

TEST_F(BadCaptureTest, MissingV) {
  const std::string path = valid("missing-v.h5");
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    f.unlink("/layers/0/v");
  }
  expect_bad_capture(path, {"/layers/0/v", "has_v"});
}

TEST_F(BadCaptureTest, WrongShape) {
  const std::string path = valid("shape.h5");
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    f.unlink("/layers/3/q");
    const hsize_t dims[4] = {2, 3, 9, 16};  // 3 heads where the attributes say 4
    f.createDataSet("/layers/3/q", H5::PredType::IEEE_F32LE, H5::DataSpace(4, dims));
  }
  // First the dtype differs (float32 in a float16 file), reported as such.
  expect_bad_capture(path, {"/layers/3/q", "float16"});
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    f.unlink("/layers/3/q");
    const hsize_t dims[4] = {2, 3, 9, 16};
    H5::DataSet d = f.createDataSet("/layers/3/q", f.openDataSet("/layers/0/q").getDataType(),
                                    H5::DataSpace(4, dims));
  }
  expect_bad_capture(path, {"/layers/3/q", "[2, 3, 9, 16]", "[2, 4, 9, 16]"});
}

TEST_F(BadCaptureTest, UnknownMajorVersion) {
  const std::string path = valid("version.h5");
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    replace_ints(f, "format_version", {2, 0});
  }
  expect_bad_capture(path, {"version 2.0"});
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    replace_ints(f, "format_version", {1, 7});  // a newer minor version stays readable
  }
  EXPECT_EQ(CaptureReader(path).info().format_minor, 7);
}

TEST_F(BadCaptureTest, InconsistentAttributes) {
  const std::string path = valid("attrs.h5");
  {
    H5::H5File f(path, H5F_ACC_RDWR);
    replace_int(f, "heads_kv", 3);
  }
  expect_bad_capture(path, {"not a multiple of heads_kv"});
  const std::string lengths = valid("lengths.h5");
  {
    H5::H5File f(lengths, H5F_ACC_RDWR);
    replace_ints(f, "len_q", {10, 5});  // datasets hold 9 query tokens
  }
  expect_bad_capture(lengths, {"exceed the stored lengths"});
  const std::string batch = valid("batch.h5");
  {
    H5::H5File f(batch, H5F_ACC_RDWR);
    replace_ints(f, "len_q", {7});
  }
  expect_bad_capture(batch, {"len_q has 1 items but len_k has 2"});
  const std::string missing = valid("no-heads.h5");
  {
    H5::H5File f(missing, H5F_ACC_RDWR);
    f.removeAttr("heads_q");
  }
  expect_bad_capture(missing, {"attribute 'heads_q' is missing"});
}

TEST_F(BadCaptureTest, NotACapture) {
  const std::string path = file("other.h5");
  {
    H5::H5File f(path, H5F_ACC_EXCL);
    H5::StrType type(H5::PredType::C_S1, 16);
    f.createAttribute("format", type, H5::DataSpace(H5S_SCALAR))
        .write(type, std::string("xattn-profile"));
  }
  expect_bad_capture(path, {"xattn-profile", "xattn-capture"});
  const std::string empty = file("empty.h5");
  { H5::H5File f(empty, H5F_ACC_EXCL); }
  expect_bad_capture(empty, {"not an xattn capture"});
}

TEST_F(CaptureFileTest, NoOverwriteWithoutForce) {
  const std::string path = file("keep.h5");
  std::ofstream(path) << "precious";
  expect_error([&] { CaptureWriter writer(path, small_info(at::kFloat)); }, ErrorKind::kIo,
               {path, "--force"});
  {
    std::ifstream in(path);
    std::string content;
    in >> content;
    EXPECT_EQ(content, "precious");
  }
  OutputOptions force;
  force.overwrite = true;
  write_sample(path, small_info(at::kFloat), force);
  EXPECT_EQ(CaptureReader(path).info().dtype, at::kFloat);
  EXPECT_EQ(entries(), 1u);
}

TEST_F(CaptureFileTest, FailedWriteLeavesNoPartialFileAndOldFileIntact) {
  const CaptureInfo info = small_info(at::kHalf);
  const std::string fresh = file("fresh.h5");
  {
    CaptureWriter writer(fresh, info);
    const at::Tensor q = at::zeros({2, 4, 9, 16}, at::kHalf);
    const at::Tensor k = at::zeros({2, 2, 19, 16}, at::kHalf);
    writer.write_layer(0, q, k, k);
    expect_error([&] { writer.write_layer(1, q, q, k); }, ErrorKind::kInvalidArgument,
                 {"k has shape", "[2, 2, 19, 16]"});
    expect_error([&] { writer.write_layer(2, q.to(at::kFloat), k, k); },
                 ErrorKind::kInvalidArgument, {"q is", "float16"});
    expect_error([&] { writer.write_layer(0, q, k, k); }, ErrorKind::kInvalidArgument,
                 {"already written"});
    expect_error([&] { writer.write_layer(1, q, k); }, ErrorKind::kInvalidArgument,
                 {"v is missing"});
    // No commit: the writer goes away as after an exception.
  }
  EXPECT_FALSE(io::path_exists(fresh));
  EXPECT_EQ(entries(), 0u) << "temporary file left behind";

  const std::string old = file("old.h5");
  const auto written = write_sample(old, info);
  {
    OutputOptions force;
    force.overwrite = true;
    CaptureWriter writer(old, info, force);
  }
  const CaptureReader reader(old);
  EXPECT_TRUE(bitwise_equal(reader.read_layer(0).q, written.at(0).q));
  EXPECT_EQ(entries(), 1u);
}

TEST_F(CaptureFileTest, WriterRejectsInconsistentInfo) {
  CaptureInfo info = small_info(at::kHalf);
  info.heads_kv = 3;
  expect_error([&] { CaptureWriter w(file("a.h5"), info); }, ErrorKind::kInvalidArgument,
               {"not a multiple"});
  info = small_info(at::kHalf);
  info.source = "somewhere";
  expect_error([&] { CaptureWriter w(file("b.h5"), info); }, ErrorKind::kInvalidArgument,
               {"source"});
  info = small_info(at::kHalf);
  info.len_q = {20, 5};  // len_q > len_k
  expect_error([&] { CaptureWriter w(file("c.h5"), info); }, ErrorKind::kInvalidArgument,
               {"len_q <= len_k"});
  info = small_info(at::kHalf);
  info.dtype = at::kDouble;
  expect_error([&] { CaptureWriter w(file("d.h5"), info); }, ErrorKind::kInvalidArgument,
               {"dtype"});
  expect_error([&] { CaptureWriter w(file("no-folder/x.h5"), small_info(at::kHalf)); },
               ErrorKind::kIo, {"does not exist"});
  EXPECT_EQ(entries(), 0u);
}

TEST_F(CaptureFileTest, EstimateFileRoundTrip) {
  EstimateFileInfo info;
  info.source_capture = "examples/data/sample_capture.h5";
  info.model_name = "synthetic-structured";
  info.source = "synthetic";
  info.heads_q = 3;
  info.stride = 8;
  info.block_size = 64;
  info.causal = true;
  info.scale = 0.125;
  info.len_q = {300, 200};
  info.len_k = {300, 250};
  const std::string path = file("estimate.h5");
  std::map<int64_t, EstimateLayer> written;
  {
    EstimateWriter writer(path, info);
    for (int64_t index : {5, 1}) {
      EstimateLayer l;
      l.block_scores = at::rand({2, 3, 5, 5}, at::kFloat);
      l.mask = at::rand({2, 3, 5, 5}).gt(0.5);
      l.thresholds = at::tensor({0.9f, 0.8f, 0.95f});
      l.density = at::rand({3}, at::kDouble);
      writer.write_layer(index, l);
      written[index] = l;
    }
    EstimateLayer bad = written[1];
    bad.mask = at::zeros({2, 3, 4, 5}, at::kBool);
    bad.block_scores = at::zeros({2, 3, 4, 5});
    expect_error([&] { writer.write_layer(2, bad); }, ErrorKind::kInvalidArgument,
                 {"blocks but earlier layers"});
    writer.commit();
  }
  const EstimateReader reader(path);
  const EstimateFileInfo& r = reader.info();
  EXPECT_EQ(r.source_capture, info.source_capture);
  EXPECT_EQ(r.source, "synthetic");
  EXPECT_EQ(r.model_name, info.model_name);
  EXPECT_EQ(r.heads_q, 3);
  EXPECT_EQ(r.stride, 8);
  EXPECT_EQ(r.block_size, 64);
  EXPECT_TRUE(r.causal);
  ASSERT_TRUE(r.scale.has_value());
  EXPECT_EQ(*r.scale, 0.125);
  EXPECT_EQ(r.len_q, info.len_q);
  EXPECT_EQ(r.len_k, info.len_k);
  EXPECT_EQ(reader.layer_indices(), (std::vector<int64_t>{1, 5}));
  for (const auto& [index, layer] : written) {
    const EstimateLayer got = reader.read_layer(index);
    EXPECT_TRUE(at::equal(got.block_scores, layer.block_scores));
    EXPECT_TRUE(at::equal(got.mask, layer.mask));
    EXPECT_TRUE(at::equal(got.thresholds, layer.thresholds.to(at::kDouble)));
    EXPECT_TRUE(at::equal(got.density, layer.density));
  }

  // Masks only; no overwrite without force; a capture is not an estimate file.
  info.has_block_scores = false;
  info.scale.reset();
  expect_error([&] { EstimateWriter w(path, info); }, ErrorKind::kIo, {"--force"});
  OutputOptions force;
  force.overwrite = true;
  {
    EstimateWriter writer(path, info, force);
    EstimateLayer l = written[1];
    expect_error([&] { writer.write_layer(0, l); }, ErrorKind::kInvalidArgument,
                 {"block_scores given"});
    l.block_scores = at::Tensor();
    l.mask = l.mask.to(at::kByte);
    writer.write_layer(0, l);
    writer.commit();
  }
  const EstimateReader masks_only(path);
  EXPECT_FALSE(masks_only.info().has_block_scores);
  EXPECT_FALSE(masks_only.info().scale.has_value());
  EXPECT_FALSE(masks_only.read_layer(0).block_scores.defined());
  EXPECT_TRUE(at::equal(masks_only.read_layer(0).mask, written[1].mask));

  const std::string capture = file("capture.h5");
  write_sample(capture, small_info(at::kHalf));
  expect_error([&] { EstimateReader r2(capture); }, ErrorKind::kBadInput,
               {"not an xattn estimate file"});
  const std::string cut = file("cut.h5");
  copy_file(path, cut);
  truncate_file(cut, io::file_size(path) / 2);
  expect_error([&] { EstimateReader r3(cut); }, ErrorKind::kBadInput, {"truncated"});
}

}  // namespace
}  // namespace xattn::io
