// safetensors reading/writing, config.json parsing and checkpoint validation messages.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "test_model_util.h"
#include "xattn/error.h"
#include "xattn/model/config.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"

namespace xattn::model {
namespace {

using testing::TempDir;
using testing::TinySpec;
using testing::write_text;

// Raw file: 8-byte little-endian length, header text, data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t declared = UINT64_MAX) {
  const uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  write_text(path, bytes + header + data);
}

// Expects an xattn::Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL() << "expected an xattn::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

TEST(ModelSafetensors, RoundTripAllFloatTypes) {
  TempDir tmp;
  const std::string path = tmp.file("t.safetensors");
  const at::Tensor a = at::randn({3, 5});
  const at::Tensor b = at::randn({7}).to(at::kBFloat16);
  const at::Tensor c = at::randn({2, 2, 2}).to(at::kHalf);
  const at::Tensor scalar = at::scalar_tensor(4.5);
  write_safetensors(path, {{"a", a}, {"b.weight", b}, {"c", c}, {"s", scalar}}, {{"k", "v"}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.names().size(), 4u);
  EXPECT_EQ(f.info("b.weight").dtype, "BF16");
  EXPECT_EQ(f.info("c").shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_TRUE(at::equal(f.load("a"), a));
  EXPECT_TRUE(at::equal(f.load("b.weight"), b));
  EXPECT_TRUE(at::equal(f.load("c"), c));
  EXPECT_EQ(f.load("s").dim(), 0);
  EXPECT_DOUBLE_EQ(f.load("s").item<double>(), 4.5);
  // Written files keep tensor data 8-byte aligned: the header length is 0 mod 8.
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  EXPECT_EQ(len[0] % 8, 0);
  // No silent overwrite.
  expect_error([&] { write_safetensors(path, {{"a", a}}); }, {"already exists"});
}

TEST(ModelSafetensors, ReadsHandWrittenFile) {
  // Bytes laid out by hand, independent of the writer: F32 [2] = {1, -2}, F16 [1] = {1.5}.
  TempDir tmp;
  const std::string path = tmp.file("hand.safetensors");
  std::string data(10, '\0');
  const float fv[2] = {1.0f, -2.0f};
  std::memcpy(&data[0], fv, 8);
  data[8] = 0x00;  // 1.5 in half precision = 0x3E00, little-endian
  data[9] = 0x3E;
  write_raw(path,
            R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}})",
            data);
  SafetensorsFile f(path);
  const at::Tensor x = f.load("x");
  EXPECT_FLOAT_EQ(x[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(x[1].item<float>(), -2.0f);
  EXPECT_FLOAT_EQ(f.load("h").to(at::kFloat).item<float>(), 1.5f);
}

TEST(ModelSafetensors, MalformedFilesAreRejectedWithNames) {
  TempDir tmp;
  const std::string p = tmp.file("bad.safetensors");
  const std::string good_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  write_text(p, "abc");
  expect_error([&] { SafetensorsFile f(p); }, {"truncated", "8-byte"});

  write_raw(p, "{" + good_entry + "}", std::string(8, '\0'), 5000);
  expect_error([&] { SafetensorsFile f(p); }, {"truncated", "header needs 5000"});

  write_raw(p, "{\"w\": [1, 2", "");
  expect_error([&] { SafetensorsFile f(p); }, {"malformed JSON header"});

  write_raw(p, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "unknown dtype 'Q4'"});

  write_raw(p, "{" + good_entry + "}", std::string(6, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "truncated"});

  write_raw(p, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "needs 12 bytes", "span 8"});

  write_raw(p, R"({"w":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'w'", "data_offsets"});

  write_raw(p, R"({"w":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}})", std::string(8, '\0'));
  SafetensorsFile f(p);
  expect_error([&] { f.load("w"); }, {"tensor 'w'", "I16", "cannot load"});
  expect_error([&] { f.load("nope"); }, {"no tensor 'nope'"});
}

// Issue 11, case 5: sorted by offset, the tensors must tile the data section exactly (the
// format's rule): overlapping byte ranges, gaps and trailing bytes are refused, naming the tensors.
TEST(ModelSafetensors, OverlapsGapsAndTrailingBytesAreRefused) {
  TempDir tmp;
  const std::string p = tmp.file("layout.safetensors");
  const std::string data(16, '\0');
  auto entry = [](const char* name, int begin, int end) {
    return detail::concat("\"", name, "\":{\"dtype\":\"F32\",\"shape\":[", (end - begin) / 4,
                          "],\"data_offsets\":[", begin, ",", end, "]}");
  };

  // b lies inside a: both named, with their ranges.
  write_raw(p, "{" + entry("a", 0, 16) + "," + entry("b", 4, 12) + "}", data);
  expect_error([&] { SafetensorsFile f(p); },
               {"tensors 'a' [0, 16) and 'b' [4, 12) overlap", "layout.safetensors"});
  // Two tensors on the same bytes, the rest of the file unused: the overlap is named.
  write_raw(p, "{" + entry("x", 0, 8) + "," + entry("y", 0, 8) + "}", std::string(8, '\0'));
  expect_error([&] { SafetensorsFile f(p); }, {"tensors 'x' [0, 8) and 'y' [0, 8) overlap"});
  // A partial overlap, whatever the order in the header.
  write_raw(p, "{" + entry("late", 4, 16) + "," + entry("early", 0, 8) + "}", data);
  expect_error([&] { SafetensorsFile f(p); },
               {"tensors 'early' [0, 8) and 'late' [4, 16) overlap"});
  // A gap between two tensors, and one before the first.
  write_raw(p, "{" + entry("a", 0, 4) + "," + entry("b", 8, 16) + "}", data);
  expect_error([&] { SafetensorsFile f(p); },
               {"bytes [4, 8)", "between tensor 'a' and tensor 'b'", "forbids gaps"});
  write_raw(p, "{" + entry("a", 4, 16) + "}", data);
  expect_error([&] { SafetensorsFile f(p); }, {"bytes [0, 4)", "before tensor 'a'"});
  // Bytes after the last tensor, or a data section with no tensor at all.
  write_raw(p, "{" + entry("a", 0, 8) + "}", data);
  expect_error([&] { SafetensorsFile f(p); }, {"bytes [8, 16)", "after the last one, 'a'"});
  write_raw(p, "{}", data);
  expect_error([&] { SafetensorsFile f(p); }, {"bytes [0, 16)", "the header lists none"});
  // Still refused as lying outside the data section.
  write_raw(p, "{" + entry("a", 8, 24) + "}", data);
  expect_error([&] { SafetensorsFile f(p); }, {"tensor 'a'", "truncated", "only 16 bytes"});

  // Allowed: an empty file, zero-size tensors where the layout continues, any header order.
  write_raw(p, "{}", "");
  EXPECT_TRUE(SafetensorsFile(p).names().empty());
  write_raw(p,
            "{" + entry("z", 8, 16) + "," + entry("e", 8, 8) + "," + entry("a", 0, 8) + "," +
                entry("end", 16, 16) + "}",
            data);
  EXPECT_EQ(SafetensorsFile(p).names().size(), 4u);
  // parse_safetensors reads an image in memory the same way.
  std::string image(8, '\0');
  const std::string header = "{" + entry("a", 0, 8) + "," + entry("b", 4, 8) + "}";
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  image += header + std::string(8, '\0');
  expect_error(
      [&] {
        parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "mem");
      },
      {"'mem'", "tensors 'a' [0, 8) and 'b' [4, 8) overlap"});
}

TEST(ModelSafetensors, ShardedCheckpointThroughIndex) {
  TempDir tmp;
  const at::Tensor a = at::randn({4}), b = at::randn({2, 3});
  write_safetensors(tmp.file("model-00001-of-00002.safetensors"), {{"a", a}});
  write_safetensors(tmp.file("model-00002-of-00002.safetensors"), {{"b", b}});
  write_text(tmp.file("model.safetensors.index.json"),
             R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
             R"("b":"model-00002-of-00002.safetensors"}})");
  Checkpoint ckpt(tmp.path());
  EXPECT_TRUE(at::equal(ckpt.load("a"), a));
  EXPECT_TRUE(at::equal(ckpt.load("b"), b));
  expect_error([&] { ckpt.load_checked("b", {3, 2}, "some key"); },
               {"tensor 'b'", "[2, 3]", "[3, 2]", "some key"});
  expect_error([&] { ckpt.load("c"); }, {"no tensor 'c'", "model-00001-of-00002.safetensors"});

  write_text(tmp.file("model.safetensors.index.json"),
             R"({"weight_map":{"a":"model-00001-of-00002.safetensors","z":"missing.safetensors"}})");
  expect_error([&] { Checkpoint c(tmp.path()); }, {"missing.safetensors", "missing"});
}

TEST(ModelConfigParse, LlamaTransformers4And5RopeFormats) {
  const std::string base = R"("architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2)";
  const ModelConfig v4 = parse_model_config("{" + base + R"(,"rope_theta":500000.0})", "t");
  EXPECT_EQ(v4.head_dim, 8);
  EXPECT_EQ(v4.num_kv_heads, 2);
  EXPECT_DOUBLE_EQ(v4.rope.theta, 500000.0);
  EXPECT_EQ(v4.rope.type, RopeType::kDefault);
  const ModelConfig v5 = parse_model_config(
      "{" + base + R"(,"rope_parameters":{"rope_theta":250000.0,"rope_type":"default"}})", "t");
  EXPECT_DOUBLE_EQ(v5.rope.theta, 250000.0);
  const ModelConfig l3 = parse_model_config(
      "{" + base + R"(,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,
      "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})",
      "t");
  EXPECT_EQ(l3.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(l3.rope.factor, 8.0);
  EXPECT_EQ(l3.rope.original_max_position_embeddings, 8192);
  const ModelConfig l3v5 = parse_model_config(
      "{" + base + R"(,"rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":32.0,
      "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})",
      "t");
  EXPECT_EQ(l3v5.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(l3v5.rope.factor, 32.0);
  EXPECT_DOUBLE_EQ(l3v5.rope.theta, 500000.0);
  EXPECT_FALSE(l3v5.qkv_bias);

  const ModelConfig qwen = parse_model_config(
      R"({"architectures":["Qwen2ForCausalLM"],"vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,
      "tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":4096})",
      "t");
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.o_bias);
  EXPECT_TRUE(qwen.tie_word_embeddings);
  EXPECT_FALSE(qwen.sliding_window.has_value());
}

TEST(ModelConfigParse, ErrorsNameTheKey) {
  expect_error([] { parse_model_config(R"({"architectures":["GPT2LMHeadModel"]})", "c.json"); },
               {"c.json", "unsupported architecture 'GPT2LMHeadModel'", "architectures"});
  expect_error(
      [] {
        parse_model_config(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,
          "hidden_size":64,"num_hidden_layers":2,"num_attention_heads":8})",
                           "c.json");
      },
      {"intermediate_size"});
  expect_error(
      [] {
        parse_model_config(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,
          "hidden_size":64,"intermediate_size":8,"num_hidden_layers":2,"num_attention_heads":8,
          "rope_scaling":{"rope_type":"mrope","factor":4.0}})",
                           "c.json");
      },
      {"rope_scaling.rope_type", "mrope"});
  expect_error(
      [] {
        parse_model_config(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,
          "hidden_size":64,"intermediate_size":8,"num_hidden_layers":"two","num_attention_heads":8})",
                           "c.json");
      },
      {"num_hidden_layers", "integer"});
  expect_error(
      [] {
        parse_model_config(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,
          "hidden_size":64,"intermediate_size":8,"num_hidden_layers":2,"num_attention_heads":8,
          "num_key_value_heads":3})",
                           "c.json");
      },
      {"num_key_value_heads"});
}

// Found by fuzz_config: a float original_max_position_embeddings beyond int64 was converted with
// undefined behaviour (UBSan); numbers that do not fit, and out-of-range values, are now refused.
TEST(ModelConfigParse, NumbersOutOfRangeAreRefused) {
  const std::string base = R"("architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8)";
  auto refused = [&](const std::string& extra, std::initializer_list<const char*> words) {
    SCOPED_TRACE(extra);
    expect_error([&] { parse_model_config("{" + base + "," + extra + "}", "c.json"); }, words);
  };
  const std::string llama3 = R"("rope_scaling":{"rope_type":"llama3","factor":8.0,)"
                             R"("low_freq_factor":1.0,"high_freq_factor":4.0,)";
  refused(llama3 + R"("original_max_position_embeddings":638418446744073709551615})",
          {"original_max_position_embeddings", "integer"});
  refused(llama3 + R"("original_max_position_embeddings":8192.5})",
          {"original_max_position_embeddings", "integer"});
  refused(llama3 + R"("original_max_position_embeddings":0})",
          {"original_max_position_embeddings", "positive"});
  refused(R"("max_position_embeddings":18446744073709551615)",
          {"max_position_embeddings", "too large"});
  refused(R"("rope_theta":1e400)", {"not valid JSON", "1e400"});
  refused(R"("rms_norm_eps":-1e-5)", {"rms_norm_eps", ">= 0"});
  refused(R"("bos_token_id":100)", {"bos_token_id", "outside the vocabulary [0, 100)"});
  refused(R"("eos_token_id":[-1, 2])", {"eos_token_id", "-1"});
  refused(R"("architectures":["MistralForCausalLM"],"sliding_window":-4)",
          {"sliding_window", "positive"});
  EXPECT_NO_THROW(parse_model_config("{" + base + "," + llama3 +
                                         R"("original_max_position_embeddings":8192}})",
                                     "c.json"));
}

TEST(ModelCheckpoint, ValidationNamesTheTensor) {
  TempDir tmp;
  TinySpec spec;
  spec.layers = 1;
  const std::string dir = tmp.file("m");
  testing::write_tiny_checkpoint(dir, spec);
  EXPECT_NO_THROW(Model m(dir));

  // Missing tensor.
  auto weights = testing::tiny_weights(spec, 1, at::kFloat);
  std::vector<std::pair<std::string, at::Tensor>> missing;
  for (auto& w : weights)
    if (w.first != "model.layers.0.mlp.up_proj.weight") missing.push_back(w);
  write_safetensors(dir + "/model.safetensors", missing, {}, true);
  expect_error([&] { Model m(dir); }, {"model.layers.0.mlp.up_proj.weight", "no tensor"});

  // Wrong shape.
  auto wrong = weights;
  for (auto& w : wrong)
    if (w.first == "model.layers.0.self_attn.k_proj.weight") w.second = at::randn({32, 32});
  write_safetensors(dir + "/model.safetensors", wrong, {}, true);
  expect_error([&] { Model m(dir); },
               {"model.layers.0.self_attn.k_proj.weight", "[32, 32]", "[16, 32]",
                "num_key_value_heads"});

  // Unsupported weight dtype.
  auto ints = weights;
  for (auto& w : ints)
    if (w.first == "model.norm.weight") w.second = at::ones({32}, at::kLong);
  write_safetensors(dir + "/model.safetensors", ints, {}, true);
  expect_error([&] { Model m(dir); }, {"model.norm.weight", "I64"});

  // Untied model without lm_head.
  std::vector<std::pair<std::string, at::Tensor>> headless;
  for (auto& w : weights)
    if (w.first != "lm_head.weight") headless.push_back(w);
  write_safetensors(dir + "/model.safetensors", headless, {}, true);
  expect_error([&] { Model m(dir); }, {"lm_head.weight", "tie_word_embeddings"});

  // More layers in the weights than in the config.
  TinySpec two = spec;
  two.layers = 2;
  write_safetensors(dir + "/model.safetensors", testing::tiny_weights(two, 1, at::kFloat), {},
                    true);
  expect_error([&] { Model m(dir); }, {"model.layers.1.", "num_hidden_layers"});

  // Truncated file (an interrupted download).
  write_safetensors(dir + "/model.safetensors", weights, {}, true);
  test_files::truncate_file(dir + "/model.safetensors",
                            io::file_size(dir + "/model.safetensors") - 100);
  expect_error([&] { Model m(dir); }, {"truncated", "lm_head.weight"});
}

}  // namespace
}  // namespace xattn::model
