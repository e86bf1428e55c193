// Profile file: round trip, validation on read (missing fields, wrong shapes, unknown major
// version, damaged files), model mismatch messages, atomic writes that never overwrite without
// force, JSON export, and the `xattn profile` CLI.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scratch.h"
#include "xattn/error.h"
#include "xattn/io/profile.h"

namespace xattn::io {
namespace {


Profile make_profile(int64_t layers = 3, int64_t heads = 4) {
  Profile p;
  p.model = {"llama", layers, heads, heads % 2 == 0 ? 2 : 1, 64, "sha256:cfg", "sha256:shapes"};
  p.kernel = {128, 8, "1/(sqrt(d)*S)", true};
  for (int64_t i = 0; i < layers * heads; ++i) {
    p.thresholds.push_back(i % 3 == 0 ? 0.9f : i % 3 == 1 ? 0.729f : 1.0f);
    p.predicted_density.push_back(0.1f + 0.05f * static_cast<float>(i % 7));
    p.predicted_error.push_back(0.001f * static_cast<float>(i % 5));
  }
  p.predicted_mean_density = 0.25;
  p.predicted_mean_error = 0.0019;
  p.budget = {0.002, "output_error", 0.01, {0.5, 0.729, 0.81, 0.9, 1.0}};
  p.uniform = UniformComparison{0.95, 0.6, 0.0018};
  p.validation = {{"kl_mean", 0.0012}, {"nll_increase", 0.003}};
  p.data = {"sha256:data", 3, {4096, 1000, 32768}, "bundled text", {2}};
  p.tool_version = "xattn 0.1.0";
  p.created_utc = "2026-11-28T10:05:54Z";
  return p;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Expects fn to throw xattn::Error of `kind` whose message contains every needle.
template <typename Fn>
void expect_error(Fn&& fn, ErrorKind kind, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an xattn::Error containing '" << needles.front() << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message lacks '" << n << "': " << e.what();
    }
  }
}

class ProfileFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = io::make_temporary_folder("xattn-profile-"); }
  void TearDown() override { io::remove_tree(dir_); }
  std::string path(const std::string& name) const { return io::join_path(dir_, name); }
  // Names in the folder, to catch leftover temporary files.
  std::vector<std::string> listing() const { return io::folder_entries(dir_); }
  // Edits a written file through the HDF5 C API, as a foreign tool or a damaged write would.
  template <typename Fn>
  void tamper(const std::string& file, Fn&& fn) {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    fn(f);
    H5Fclose(f);
  }
  static void set_int_attr(hid_t loc, const char* obj, const char* name, int32_t value) {
    const hid_t a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(a, 0);
    H5Awrite(a, H5T_NATIVE_INT32, &value);
    H5Aclose(a);
  }

  std::string dir_;
};

TEST_F(ProfileFile, RoundTrip) {
  const Profile p = make_profile();
  write_profile(path("p.h5"), p, false);
  const Profile q = read_profile(path("p.h5"));
  EXPECT_EQ(q.format_major, kProfileFormatMajor);
  EXPECT_EQ(q.format_minor, kProfileFormatMinor);
  EXPECT_EQ(q.model.architecture, "llama");
  EXPECT_EQ(q.model.num_layers, 3);
  EXPECT_EQ(q.model.heads_q, 4);
  EXPECT_EQ(q.model.heads_kv, 2);
  EXPECT_EQ(q.model.head_dim, 64);
  EXPECT_EQ(q.model.config_hash, "sha256:cfg");
  EXPECT_EQ(q.model.weight_shapes_hash, "sha256:shapes");
  EXPECT_EQ(q.kernel.block_size, 128);
  EXPECT_EQ(q.kernel.stride, 8);
  EXPECT_EQ(q.kernel.scale_rule, "1/(sqrt(d)*S)");
  EXPECT_TRUE(q.kernel.causal);
  EXPECT_TRUE(q.kernel.dense_last_query_block);
  EXPECT_EQ(q.thresholds, p.thresholds);  // bit-exact float32
  EXPECT_EQ(q.predicted_density, p.predicted_density);
  EXPECT_EQ(q.predicted_error, p.predicted_error);
  EXPECT_EQ(q.predicted_mean_density, p.predicted_mean_density);
  EXPECT_EQ(q.predicted_mean_error, p.predicted_mean_error);
  EXPECT_EQ(q.budget.epsilon, 0.002);
  EXPECT_EQ(q.budget.metric, "output_error");
  ASSERT_TRUE(q.budget.per_head_cap.has_value());
  EXPECT_EQ(*q.budget.per_head_cap, 0.01);
  EXPECT_EQ(q.budget.candidates, p.budget.candidates);
  ASSERT_TRUE(q.uniform.has_value());
  EXPECT_EQ(q.uniform->tau, 0.95);
  EXPECT_EQ(q.uniform->density, 0.6);
  EXPECT_EQ(q.uniform->error, 0.0018);
  EXPECT_EQ(q.validation, p.validation);
  EXPECT_EQ(q.data.hash, "sha256:data");
  EXPECT_EQ(q.data.sample_count, 3);
  EXPECT_EQ(q.data.lengths, p.data.lengths);
  EXPECT_EQ(q.data.holdout_samples, std::vector<int64_t>{2});
  EXPECT_EQ(q.data.description, "bundled text");
  EXPECT_EQ(q.tool_version, "xattn 0.1.0");
  EXPECT_EQ(q.created_utc, "2026-11-28T10:05:54Z");
  EXPECT_EQ(listing(), std::vector<std::string>{"p.h5"});  // no temporary file left behind
}

TEST_F(ProfileFile, LastQueryBlockRuleRoundTripsAndOlderFilesReadAsSparse) {
  Profile p = make_profile();
  p.kernel.dense_last_query_block = false;
  write_profile(path("sparse.h5"), p, false);
  EXPECT_FALSE(read_profile(path("sparse.h5")).kernel.dense_last_query_block);
  // A file written before format 1.2 has no attribute: its thresholds were calibrated with the
  // last query block selected like the others.
  write_profile(path("old.h5"), make_profile(), false);
  tamper(path("old.h5"),
         [](hid_t f) { H5Adelete_by_name(f, "kernel", "dense_last_query_block", H5P_DEFAULT); });
  EXPECT_FALSE(read_profile(path("old.h5")).kernel.dense_last_query_block);
  EXPECT_TRUE(read_profile(path("old.h5")).kernel.causal);
}

TEST_F(ProfileFile, FrontierRoundTripsThroughHdf5AndJson) {
  Profile p = make_profile();
  p.frontier.holdout_tokens = 8190;
  p.frontier.uniform = {{0.9, 0.3, 0.31, 0.097, 0.08}, {0.99, 0.44, 0.45, 0.0017, -0.0004}};
  p.frontier.per_head = {{0.0045, 0.29, 0.298, 0.00316, 0.001}};
  write_profile(path("f.h5"), p, false);
  const Profile q = read_profile(path("f.h5"));
  EXPECT_GE(q.format_minor, 3);  // 1.3 added the frontier
  EXPECT_EQ(q.frontier.holdout_tokens, 8190);
  ASSERT_EQ(q.frontier.uniform.size(), 2u);
  ASSERT_EQ(q.frontier.per_head.size(), 1u);
  EXPECT_EQ(q.frontier.uniform[1].parameter, 0.99);
  EXPECT_EQ(q.frontier.uniform[1].nll_increase, -0.0004);
  EXPECT_EQ(q.frontier.per_head[0].kl, 0.00316);
  EXPECT_EQ(q.frontier.per_head[0].predicted_density, 0.29);
  const nlohmann::json j = nlohmann::json::parse(profile_to_json(q));
  EXPECT_EQ(j["frontier"]["holdout_tokens"], 8190);
  EXPECT_EQ(j["frontier"]["uniform"][0]["density"], 0.31);
  EXPECT_EQ(j["frontier"]["per_head"][0]["parameter"], 0.0045);
  // Without one, no group is written and none is read.
  write_profile(path("g.h5"), make_profile(), false);
  EXPECT_TRUE(read_profile(path("g.h5")).frontier.empty());
  EXPECT_EQ(nlohmann::json::parse(profile_to_json(make_profile())).count("frontier"), 0u);
  // A non-finite frontier value is named.
  tamper(path("f.h5"), [](hid_t f) {
    const hid_t d = H5Dopen2(f, "/frontier/uniform/kl", H5P_DEFAULT);
    const double bad[2] = {NAN, 0.0};
    H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad);
    H5Dclose(d);
  });
  try {
    read_profile(path("f.h5"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/frontier/uniform/kl"), std::string::npos) << e.what();
  }
}

TEST_F(ProfileFile, HoldoutIndicesAreChecked) {
  Profile p = make_profile();
  p.data.holdout_samples = {1, 3};  // 3 samples: index 3 does not exist
  expect_error([&] { write_profile(path("p.h5"), p, false); }, ErrorKind::kBadInput,
               {"/calibration_data/holdout_samples"});
  p.data.holdout_samples = {2, 1};  // not ascending
  expect_error([&] { write_profile(path("p.h5"), p, false); }, ErrorKind::kBadInput,
               {"/calibration_data/holdout_samples"});
}

TEST_F(ProfileFile, RoundTripWithoutOptionalParts) {
  Profile p = make_profile(1, 1);
  p.kernel.causal = false;
  p.budget.per_head_cap.reset();
  p.budget.candidates.clear();
  p.uniform.reset();
  p.validation.clear();
  p.data = {"", 0, {}, ""};
  p.model.config_hash.clear();
  write_profile(path("p.h5"), p, false);
  const Profile q = read_profile(path("p.h5"));
  EXPECT_FALSE(q.kernel.causal);
  EXPECT_FALSE(q.budget.per_head_cap.has_value());
  EXPECT_TRUE(q.budget.candidates.empty());
  EXPECT_FALSE(q.uniform.has_value());
  EXPECT_TRUE(q.validation.empty());
  EXPECT_EQ(q.data.sample_count, 0);
  EXPECT_TRUE(q.data.lengths.empty());
  EXPECT_EQ(q.model.config_hash, "");
  EXPECT_EQ(q.thresholds, p.thresholds);
}

TEST_F(ProfileFile, MissingFieldsAreNamed) {
  const std::string file = path("p.h5");
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) { H5Adelete_by_name(f, "model", "heads_kv", H5P_DEFAULT); });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput, {"/model/heads_kv", "missing", file});

  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) { H5Ldelete(f, "predicted/error", H5P_DEFAULT); });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput, {"/predicted/error", "missing"});

  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) { H5Ldelete(f, "calibration_data", H5P_DEFAULT); });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput, {"/calibration_data", "missing"});

  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) { H5Adelete_by_name(f, ".", "created_utc", H5P_DEFAULT); });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput, {"/created_utc", "missing"});
}

TEST_F(ProfileFile, WrongShapesAndTypesAreNamed) {
  const std::string file = path("p.h5");
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) {
    H5Ldelete(f, "thresholds", H5P_DEFAULT);
    const hsize_t dims[2] = {3, 5};
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    const hid_t set = H5Dcreate2(f, "thresholds", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                 H5P_DEFAULT);
    std::vector<float> values(15, 0.9f);
    H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(set);
    H5Sclose(space);
  });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput,
               {"/thresholds", "has shape [3, 5], expected [3, 4]"});

  // A count stored as a string.
  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) {
    H5Adelete_by_name(f, "kernel", "stride", H5P_DEFAULT);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, 1);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate_by_name(f, "kernel", "stride", type, space, H5P_DEFAULT,
                                      H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, type, "8");
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
  });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput, {"/kernel/stride", "integer"});

  // Values out of range are caught by the same validation as on write.
  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) {
    const hid_t set = H5Dopen2(f, "thresholds", H5P_DEFAULT);
    std::vector<float> values(12, 0.9f);
    values[5] = 1.5f;
    H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(set);
  });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput,
               {"/thresholds", "layer 1 head 1", "(0, 1]"});
}

TEST_F(ProfileFile, UnknownMajorVersionIsRejectedNewerMinorAccepted) {
  const std::string file = path("p.h5");
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) { set_int_attr(f, ".", "format_major", 2); });
  expect_error([&] { read_profile(file); }, ErrorKind::kBadInput,
               {"format version 2.", "major version 1"});

  std::remove(file.c_str());
  write_profile(file, make_profile(), false);
  tamper(file, [](hid_t f) {
    set_int_attr(f, ".", "format_minor", 7);
    // A field a later minor version might add: ignored by this reader.
    const hid_t g = H5Gcreate2(f, "future_extension", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(g);
  });
  const Profile q = read_profile(file);
  EXPECT_EQ(q.format_minor, 7);
  EXPECT_EQ(q.thresholds, make_profile().thresholds);
}

TEST_F(ProfileFile, ForeignAndDamagedFilesAreRejected) {
  write_bytes(path("text.h5"), "not hdf5 at all\n");
  expect_error([&] { read_profile(path("text.h5")); }, ErrorKind::kBadInput, {"not an HDF5 file"});
  expect_error([&] { read_profile(path("absent.h5")); }, ErrorKind::kIo, {"no such file"});
  // A folder is not called a damaged file (issue 11).
  expect_error([&] { read_profile(dir_); }, ErrorKind::kIo, {"is a folder"});

  // An HDF5 file that is not a profile.
  {
    const hid_t f = H5Fcreate(path("other.h5").c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    H5Fclose(f);
  }
  expect_error([&] { read_profile(path("other.h5")); }, ErrorKind::kBadInput,
               {"not an xattn profile"});

  // Truncated at many points: always a clean xattn::Error, never a crash or a silent success.
  write_profile(path("p.h5"), make_profile(8, 8), false);
  const std::string bytes = read_bytes(path("p.h5"));
  ASSERT_GT(bytes.size(), 1000u);
  for (size_t cut : {size_t(0), size_t(8), size_t(100), bytes.size() / 4, bytes.size() / 2,
                     bytes.size() - 100, bytes.size() - 1}) {
    write_bytes(path("cut.h5"), bytes.substr(0, cut));
    try {
      read_profile(path("cut.h5"));
      ADD_FAILURE() << "a file cut at " << cut << " of " << bytes.size() << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    }
  }
}

TEST(ProfileMatch, MessagesSayWhatDiffers) {
  const Profile p = make_profile(32, 32);
  ModelSignature m = p.model;
  EXPECT_TRUE(profile_mismatches(p, m).empty());
  EXPECT_NO_THROW(check_profile_matches(p, m));

  m.num_layers = 28;
  expect_error([&] { check_profile_matches(p, m); }, ErrorKind::kBadInput,
               {"profile is for 32 layers, model has 28", "xattn calibrate"});
  m.heads_kv = 4;
  m.head_dim = 128;
  m.architecture = "qwen2";
  m.config_hash = "sha256:other";
  const std::vector<std::string> diffs = profile_mismatches(p, m);
  ASSERT_EQ(diffs.size(), 5u);
  EXPECT_EQ(diffs[0], "profile is for architecture 'llama', model is 'qwen2'");
  EXPECT_EQ(diffs[1], "profile is for 32 layers, model has 28");
  EXPECT_EQ(diffs[2], "profile is for 2 KV heads, model has 4");
  EXPECT_EQ(diffs[3], "profile is for head_dim 64, model has head_dim 128");
  EXPECT_EQ(diffs[4], "config.json hash differs (profile sha256:cfg, model sha256:other)");

  // An unknown (empty) hash on either side is not compared.
  m = p.model;
  m.config_hash.clear();
  m.weight_shapes_hash.clear();
  EXPECT_TRUE(profile_mismatches(p, m).empty());
  m.heads_q = 16;
  expect_error([&] { check_profile_matches(p, m); }, ErrorKind::kBadInput,
               {"profile is for 32 query heads, model has 16"});
}

TEST_F(ProfileFile, NoOverwriteWithoutForce) {
  const std::string file = path("p.h5");
  Profile p = make_profile();
  write_profile(file, p, false);
  const std::string before = read_bytes(file);
  p.thresholds[0] = 0.5f;
  expect_error([&] { write_profile(file, p, false); }, ErrorKind::kIo, {"already exists", "--force"});
  EXPECT_EQ(read_bytes(file), before);
  EXPECT_EQ(listing(), std::vector<std::string>{"p.h5"});
  write_profile(file, p, true);
  EXPECT_EQ(read_profile(file).thresholds[0], 0.5f);
  EXPECT_EQ(listing(), std::vector<std::string>{"p.h5"});
}

TEST_F(ProfileFile, FailedWriteLeavesOldFileIntact) {
  const std::string file = path("p.h5");
  write_profile(file, make_profile(), false);
  const std::string before = read_bytes(file);

  // Invalid content: rejected before anything is written, even with overwrite.
  Profile bad = make_profile();
  bad.predicted_error.pop_back();
  expect_error([&] { write_profile(file, bad, true); }, ErrorKind::kBadInput, {"/predicted/error"});
  EXPECT_EQ(read_bytes(file), before);

  // A failure after the temporary file is complete (the final rename fails because the target is
  // a non-empty folder): the temporary file is removed and the folder untouched.
  io::make_folders(path("taken"));
  write_bytes(path("taken/keep"), "x");
  expect_error([&] { write_profile(path("taken"), make_profile(), true); }, ErrorKind::kIo,
               {"cannot write", "taken"});
  EXPECT_EQ(read_bytes(path("taken/keep")), "x");
  EXPECT_EQ(read_bytes(file), before);
  EXPECT_EQ(listing(), (std::vector<std::string>{"p.h5", "taken"}));

  // A missing folder is named.
  expect_error([&] { write_profile(path("nowhere/p.h5"), make_profile(), false); }, ErrorKind::kIo,
               {"does not exist"});
  EXPECT_EQ(read_profile(file).thresholds, make_profile().thresholds);
}

TEST_F(ProfileFile, JsonExport) {
  const Profile p = make_profile();
  const nlohmann::json j = nlohmann::json::parse(profile_to_json(p));
  EXPECT_EQ(j["format"], "xattn-profile");
  EXPECT_EQ(j["format_version"]["major"], kProfileFormatMajor);
  EXPECT_EQ(j["model"]["num_layers"], 3);
  EXPECT_EQ(j["kernel"]["scale_rule"], "1/(sqrt(d)*S)");
  ASSERT_EQ(j["thresholds"].size(), 3u);
  ASSERT_EQ(j["thresholds"][0].size(), 4u);
  // float32 values are written as their shortest decimal: 0.9f reads as 0.9, not 0.8999999762.
  EXPECT_EQ(j["thresholds"][0][0].get<double>(), 0.9);
  EXPECT_EQ(j["thresholds"][0][1].get<double>(), 0.729);
  EXPECT_EQ(static_cast<float>(j["predicted"]["density"][1][2].get<double>()),
            p.predicted_density[6]);
  EXPECT_EQ(j["budget"]["per_head_cap"], 0.01);
  EXPECT_EQ(j["uniform"]["tau"], 0.95);
  EXPECT_EQ(j["validation"]["kl_mean"], 0.0012);
  EXPECT_EQ(j["calibration_data"]["lengths"][2], 32768);

  Profile bare = make_profile();
  bare.uniform.reset();
  bare.budget.per_head_cap.reset();
  bare.validation["passkey_accuracy"] = std::nan("");
  const nlohmann::json k = nlohmann::json::parse(profile_to_json(bare));
  EXPECT_TRUE(k["uniform"].is_null());
  EXPECT_TRUE(k["budget"]["per_head_cap"].is_null());
  EXPECT_TRUE(k["validation"]["passkey_accuracy"].is_null());

  const std::string out = path("p.json");
  write_profile_json(out, p, false);
  EXPECT_EQ(nlohmann::json::parse(read_bytes(out)), j);
  expect_error([&] { write_profile_json(out, bare, false); }, ErrorKind::kIo, {"--force"});
  EXPECT_EQ(nlohmann::json::parse(read_bytes(out)), j);
  write_profile_json(out, bare, true);
  EXPECT_TRUE(nlohmann::json::parse(read_bytes(out))["uniform"].is_null());
  EXPECT_EQ(listing(), std::vector<std::string>{"p.json"});
  // File names in the free text need not be UTF-8 (a fuzzing finding): the export replaces such
  // bytes instead of throwing, the HDF5 file keeps them.
  Profile raw = make_profile();
  raw.data.description = "samples from /data/caf\xE9-\xB2.txt";
  write_profile(path("raw.h5"), raw, false);
  EXPECT_EQ(read_profile(path("raw.h5")).data.description, raw.data.description);
  const nlohmann::json exported = nlohmann::json::parse(profile_to_json(raw));
  EXPECT_EQ(exported["calibration_data"]["description"],
            "samples from /data/caf\xEF\xBF\xBD-\xEF\xBF\xBD.txt");
}

TEST(ProfileValidate, BadValuesAreNamed) {
  Profile p = make_profile();
  p.thresholds.resize(11);
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput,
               {"/thresholds", "has 11 values", "3 x 4 = 12"});
  p = make_profile();
  p.model.heads_kv = 3;
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/model/heads_kv"});
  p = make_profile();
  p.kernel.stride = 5;
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/kernel/stride"});
  p = make_profile();
  p.predicted_density[0] = std::nanf("");
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/predicted/density", "layer 0 head 0"});
  p = make_profile();
  p.data.sample_count = 4;
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/calibration_data/lengths"});
  p = make_profile();
  p.budget.metric.clear();
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/budget/metric"});
  p = make_profile();
  p.validation["a/b"] = 1.0;
  expect_error([&] { validate_profile(p); }, ErrorKind::kBadInput, {"/validation", "a/b"});
}

TEST(ProfileTime, Iso8601Utc) {
  const std::string now = utc_now_iso8601();
  ASSERT_EQ(now.size(), 20u) << now;
  EXPECT_EQ(now[4], '-');
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now.back(), 'Z');
}

TEST(ProfileSummary, HasHeaderAndOneRowPerLayer) {
  const std::string s = format_profile_summary(make_profile());
  EXPECT_NE(s.find("llama: 3 layers, 4 query / 2 KV heads, head_dim 64"), std::string::npos) << s;
  EXPECT_NE(s.find("mean output_error <= 0.002"), std::string::npos) << s;
  EXPECT_NE(s.find("uniform τ    0.95: density 0.6, error 0.0018"), std::string::npos) << s;
  EXPECT_NE(s.find("3 samples, 1000..32768 tokens (mean 12621)"), std::string::npos) << s;
  EXPECT_NE(s.find("kl_mean"), std::string::npos) << s;
  // Layer 0 holds heads 0..3: τ 0.9, 0.729, 1.0, 0.9.
  EXPECT_NE(s.find("    0   0.8822   0.7290   1.0000   0.1750     0.001500"), std::string::npos) << s;
  EXPECT_NE(s.find("\n    2 "), std::string::npos) << s;
  EXPECT_EQ(s.find("\n    3 "), std::string::npos) << s;
}

#ifdef XATTN_CLI_PATH
// Runs the CLI through the shell; returns the exit code, output in *out.
int run_cli(const std::string& args, std::string* out) {
  const std::string capture = test_files::scratch_file("xattn-profile-cli.txt");
  const int status = std::system((std::string(XATTN_CLI_PATH) + " " + args + " >" + capture + " 2>&1").c_str());
  *out = read_bytes(capture);
  std::remove(capture.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(ProfileFile, CliShowAndExport) {
  const std::string file = path("p.h5");
  write_profile(file, make_profile(), false);
  std::string out;
  ASSERT_EQ(run_cli("profile show " + file, &out), 0) << out;
  EXPECT_NE(out.find("mean τ"), std::string::npos) << out;
  EXPECT_NE(out.find("3 layers"), std::string::npos) << out;

  const std::string json = path("p.json");
  ASSERT_EQ(run_cli("profile export --json " + json + " " + file, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(read_bytes(json)), nlohmann::json::parse(profile_to_json(make_profile())));
  EXPECT_EQ(run_cli("profile export --json " + json + " " + file, &out), 4) << out;
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  EXPECT_EQ(run_cli("profile export --json " + json + " " + file + " --force", &out), 0) << out;

  EXPECT_EQ(run_cli("profile show " + path("absent.h5"), &out), 4) << out;
  write_bytes(path("bad.h5"), "junk");
  EXPECT_EQ(run_cli("profile show " + path("bad.h5"), &out), 3) << out;
  EXPECT_EQ(run_cli("profile frobnicate", &out), 2) << out;
  EXPECT_EQ(run_cli("profile export " + file, &out), 2) << out;  // --json missing
  EXPECT_EQ(run_cli("profile --help", &out), 0) << out;
  EXPECT_NE(out.find("export"), std::string::npos) << out;
}
#endif

}  // namespace
}  // namespace xattn::io
