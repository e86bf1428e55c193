// Writes small valid inputs for every fuzz target with the project's own writers, so the seeds
// follow the current formats: `xattn_fuzz_seeds DIR` fills DIR/<target>/ (tests/fuzz/run.sh adds
// the committed corpus and the bundled files, see docs/robustness.md). Each file is a few KB.
#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/io/capture.h"
#include "xattn/io/paths.h"
#include "xattn/io/profile.h"
#include "xattn/model/safetensors.h"

namespace {

using namespace xattn;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string folder(const std::string& root, const std::string& target) {
  const std::string path = io::join_path(root, target);
  io::make_folders(path);
  return path;
}

void safetensors_seeds(const std::string& dir) {
  model::write_safetensors(
      dir + "/tiny.safetensors",
      {{"model.embed_tokens.weight", at::randn({4, 2}).to(at::kBFloat16)},
       {"model.layers.0.self_attn.q_proj.weight", at::randn({2, 2}).to(at::kHalf)},
       {"model.norm.weight", at::ones({2})},
       {"lm_head.weight", at::randn({4, 2}).to(at::kDouble)},
       {"ids", at::arange(3, at::kLong)},
       {"mask", at::ones({3}, at::kByte)},
       {"scalar", at::scalar_tensor(1.5)},
       {"empty", at::empty({0, 3})}},
      {{"format", "pt"}}, true);
}

void index_seeds(const std::string& dir) {
  write_text(dir + "/index.json",
             R"({"metadata":{"total_size":28},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
             R"("b":"model-00002-of-00002.safetensors"}})");
}

void config_seeds(const std::string& dir) {
  // The bundled config.json is added by run.sh; these cover the other accepted shapes.
  write_text(dir + "/llama3.json",
             R"({"architectures":["LlamaForCausalLM"],"vocab_size":128256,"hidden_size":4096,)"
             R"("intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,)"
             R"("num_key_value_heads":8,"rms_norm_eps":1e-05,"rope_theta":500000.0,)"
             R"("rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,)"
             R"("original_max_position_embeddings":8192,"rope_type":"llama3"},)"
             R"("tie_word_embeddings":false,"torch_dtype":"bfloat16","attention_bias":false,)"
             R"("mlp_bias":false,"max_position_embeddings":131072,"bos_token_id":128000,)"
             R"("eos_token_id":[128001,128009]})");
  write_text(dir + "/qwen2.json",
             R"({"architectures":["Qwen2ForCausalLM"],"vocab_size":151936,"hidden_size":896,)"
             R"("intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,)"
             R"("num_key_value_heads":2,"rope_theta":1000000.0,"sliding_window":32768,)"
             R"("use_sliding_window":true,"tie_word_embeddings":true,"torch_dtype":"bfloat16"})");
  write_text(dir + "/mistral-v5.json",
             R"({"architectures":["MistralForCausalLM"],"vocab_size":32000,"hidden_size":64,)"
             R"("intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,)"
             R"("num_key_value_heads":2,"head_dim":16,"sliding_window":null,)"
             R"("rope_parameters":{"rope_theta":10000.0,"rope_type":"linear","factor":2.0}})");
}

void token_seeds(const std::string& dir) {
  write_text(dir + "/ids.txt", "256 72 101 108 108 111\n32,119 111\n");
  for (const auto& [name, dataset, rank] :
       {std::make_tuple("ids.h5", "input_ids", 2), std::make_tuple("tokens.h5", "tokens", 1)}) {
    const hid_t file = H5Fcreate((dir + "/" + name).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT,
                                 H5P_DEFAULT);
    const hsize_t dims[2] = {1, 5};
    const hid_t space = H5Screate_simple(rank, rank == 2 ? dims : dims + 1, nullptr);
    const hid_t ds = H5Dcreate2(file, dataset, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT);
    const int64_t ids[5] = {256, 72, 105, 33, 10};
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(file);
  }
}

void capture_seeds(const std::string& dir) {
  io::CaptureInfo info;
  info.model_name = "seed";
  info.source = "synthetic";
  info.dtype = at::kHalf;
  info.num_layers = 3;
  info.heads_q = 2;
  info.heads_kv = 1;
  info.head_dim = 4;
  info.has_v = true;
  info.len_q = {8, 5};
  info.len_k = {8, 6};
  {
    io::CaptureWriter w(dir + "/float16-v.h5", info, {true, 0});
    for (int64_t layer : {0, 2})
      w.write_layer(layer, at::randn({2, 2, 8, 4}).to(at::kHalf),
                    at::randn({2, 1, 8, 4}).to(at::kHalf), at::randn({2, 1, 8, 4}).to(at::kHalf));
    w.commit();
  }
  info.dtype = at::kBFloat16;
  info.has_v = false;
  info.causal = false;
  info.num_layers = 1;
  info.len_q = {8};
  info.len_k = {8};
  info.video = io::VideoShape{2, 2, 2};
  {
    io::CaptureWriter w(dir + "/bfloat16-video.h5", info, {true, 1});
    w.write_layer(0, at::randn({1, 2, 8, 4}).to(at::kBFloat16),
                  at::randn({1, 1, 8, 4}).to(at::kBFloat16));
    w.commit();
  }
}

void statistics_seeds(const std::string& dir) {
  calibrate::Statistics s;
  s.settings.taus = {0.5, 0.9, 1.0};
  s.model_name = "seed";
  s.model_signature = calibrate::signature_key({"llama", 3, 2, 1, 4, "fnv1a64:0", "fnv1a64:1"});
  s.heads_q = 2;
  s.heads_kv = 1;
  s.head_dim = 4;
  s.layers = {0, 2};
  s.samples = {{256, 256, "seed.h5#0"}, {128, 256, "seed.h5#1"}};
  const size_t n = 2 * 2 * 2 * 3;
  for (size_t i = 0; i < n; ++i) {
    const float t = float(i % 3) / 2.0f;
    s.density.push_back(0.2f + 0.4f * t);
    s.recall_mean.push_back(0.9f + 0.05f * t);
    s.recall_min.push_back(0.8f + 0.1f * t);
    s.output_error.push_back(0.1f * (1.0f - t));
    s.projected_error.push_back(0.01f * (1.0f - t));
  }
  s.layer_kl_sensitivity = {0.5, 2.0};
  s.sensitivity_samples = 1;
  calibrate::write_statistics(dir + "/statistics.h5", s, true);
}

void profile_seeds(const std::string& dir) {
  io::Profile p;
  p.model = {"llama", 2, 2, 1, 64, "sha256:cfg", "sha256:shapes"};
  p.thresholds = {0.9f, 0.5f, 1.0f, 0.729f};
  p.predicted_density = {0.3f, 0.2f, 1.0f, 0.25f};
  p.predicted_error = {0.001f, 0.002f, 0.0f, 0.003f};
  p.predicted_mean_density = 0.4;
  p.predicted_mean_error = 0.0015;
  p.budget = {0.005, "kl", 0.01, {0.5, 0.729, 0.9, 1.0}};
  p.uniform = io::UniformComparison{0.9, 0.5, 0.004};
  p.validation = {{"kl_mean", 0.002}, {"nll_increase", 0.001}};
  p.frontier.holdout_tokens = 4096;
  p.frontier.uniform = {{0.9, 0.3, 0.31, 0.01, 0.005}, {1.0, 1.0, 1.0, 0.0, 0.0}};
  p.frontier.per_head = {{0.005, 0.2, 0.22, 0.004, 0.002}};
  p.data = {"sha256:data", 3, {4096, 1000, 2048}, "seed text", {2}};
  p.tool_version = "xattn 0.1.0";
  p.created_utc = "2026-12-01T00:00:00Z";
  io::write_profile(dir + "/profile.h5", p, true);
}

// The smallest tokenizer.json of each pre-tokenizer kind (the committed corpus and
// tests/data/tokenizers/ hold fuller ones).
void tokenizer_seeds(const std::string& dir) {
  const std::string model =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  write_text(dir + "/tiny-bpe.json", "{" + model + "}");
  write_text(dir + "/tiny-bytelevel.json",
             R"({"pre_tokenizer": {"type": "ByteLevel", "use_regex": true}, )" + model + "}");
  write_text(dir + "/tiny-metaspace.json",
             R"({"pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "always"}, )" + model +
                 "}");
}

// Protobuf pieces for a hand-made tokenizer.model.
std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(char((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
  return out;
}
std::string field(uint32_t number, const std::string& bytes) {
  return varint((uint64_t(number) << 3) | 2) + varint(bytes.size()) + bytes;
}
std::string piece(const std::string& text, float score, int type) {
  char f[4];
  std::memcpy(f, &score, 4);
  return field(1, field(1, text) + varint((2 << 3) | 5) + std::string(f, 4) + varint(3 << 3) +
                      varint(uint64_t(type)));
}

// SentencePiece models of both kinds: <unk>, <s>, </s>, two byte pieces, a few normal pieces.
void sentencepiece_seeds(const std::string& dir) {
  const std::string pieces = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3) +
                             piece("<0x41>", 0, 6) + piece("<0xC3>", 0, 6) +
                             piece("\xE2\x96\x81", -1, 1) + piece("a", -2, 1) +
                             piece("\xE2\x96\x81" "a", -3, 1) + piece("b", -4, 4);
  for (int type : {1, 2}) {
    const std::string trainer = varint(3 << 3) + varint(uint64_t(type)) + varint(35 << 3) +
                                varint(1);
    const std::string normalizer = field(1, "identity") + varint(3 << 3) + varint(1);
    write_text(dir + (type == 1 ? "/unigram.model" : "/bpe.model"),
               pieces + field(2, trainer) + field(3, normalizer));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: xattn_fuzz_seeds DIR (writes DIR/<target>/ seed files)\n");
    return 2;
  }
  const std::string root = argv[1];
  try {
    at::manual_seed(0);
    safetensors_seeds(folder(root, "safetensors"));
    index_seeds(folder(root, "checkpoint_index"));
    config_seeds(folder(root, "config"));
    token_seeds(folder(root, "token_ids"));
    capture_seeds(folder(root, "capture"));
    statistics_seeds(folder(root, "statistics"));
    profile_seeds(folder(root, "profile"));
    tokenizer_seeds(folder(root, "tokenizer"));
    sentencepiece_seeds(folder(root, "sentencepiece"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xattn_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
