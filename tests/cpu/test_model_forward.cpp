// The decoder forward pass against a plain-loop float64 reference, KV-cache decoding against
// full prefill, per-token NLL against full logits, and token id files.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <map>

#include "test_model_util.h"
#include "xattn/error.h"
#include "xattn/model/model.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

using testing::TempDir;
using testing::TinySpec;

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // rows

Mat to_mat(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  Mat m(static_cast<size_t>(d.size(0)), Vec(static_cast<size_t>(d.size(1))));
  auto a = d.accessor<double, 2>();
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m[i].size(); ++j) m[i][j] = a[i][j];
  return m;
}
Vec to_vec(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return Vec(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}
// y = W x + b for W [out, in]
Vec matvec(const Mat& w, const Vec& x, const Vec* b = nullptr) {
  Vec y(w.size(), 0.0);
  for (size_t o = 0; o < w.size(); ++o) {
    for (size_t i = 0; i < x.size(); ++i) y[o] += w[o][i] * x[i];
    if (b) y[o] += (*b)[o];
  }
  return y;
}
Vec rmsnorm(const Vec& x, const Vec& w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= static_cast<double>(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = w[i] * x[i] / std::sqrt(ms + eps);
  return y;
}

// Logits at every position of a Llama/Qwen2 model, written from the definitions with loops.
Mat reference_logits(const std::string& dir, const TinySpec& s, const std::vector<int64_t>& ids) {
  Checkpoint ck(dir);
  auto M = [&](const std::string& n) { return to_mat(ck.load(n)); };
  auto V = [&](const std::string& n) { return to_vec(ck.load(n)); };
  const size_t L = ids.size(), d = static_cast<size_t>(s.head_dim);
  const size_t hq = static_cast<size_t>(s.heads), hkv = static_cast<size_t>(s.kv_heads);
  const Mat emb = M("model.embed_tokens.weight");
  Mat h(L);
  for (size_t t = 0; t < L; ++t) h[t] = emb[static_cast<size_t>(ids[t])];
  for (int64_t layer = 0; layer < s.layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const Mat wq = M(p + "self_attn.q_proj.weight"), wk = M(p + "self_attn.k_proj.weight"),
              wv = M(p + "self_attn.v_proj.weight"), wo = M(p + "self_attn.o_proj.weight");
    Vec bq, bk, bv;
    if (s.qkv_bias) {
      bq = V(p + "self_attn.q_proj.bias");
      bk = V(p + "self_attn.k_proj.bias");
      bv = V(p + "self_attn.v_proj.bias");
    }
    const Vec n1 = V(p + "input_layernorm.weight"), n2 = V(p + "post_attention_layernorm.weight");
    Mat q(L), k(L), v(L);
    for (size_t t = 0; t < L; ++t) {
      const Vec x = rmsnorm(h[t], n1, s.eps);
      q[t] = matvec(wq, x, s.qkv_bias ? &bq : nullptr);
      k[t] = matvec(wk, x, s.qkv_bias ? &bk : nullptr);
      v[t] = matvec(wv, x, s.qkv_bias ? &bv : nullptr);
      // Rotate pairs (i, i + d/2) of every head by t * theta^(-2i/d).
      for (Vec* vec : {&q[t], &k[t]}) {
        const size_t heads = vec == &q[t] ? hq : hkv;
        for (size_t hh = 0; hh < heads; ++hh)
          for (size_t i = 0; i < d / 2; ++i) {
            const double a = std::pow(s.rope_theta, -2.0 * double(i) / double(d)) * double(t);
            double& x1 = (*vec)[hh * d + i];
            double& x2 = (*vec)[hh * d + i + d / 2];
            const double r1 = x1 * std::cos(a) - x2 * std::sin(a);
            const double r2 = x2 * std::cos(a) + x1 * std::sin(a);
            x1 = r1;
            x2 = r2;
          }
      }
    }
    Mat out(L, Vec(hq * d, 0.0));
    for (size_t t = 0; t < L; ++t)
      for (size_t hh = 0; hh < hq; ++hh) {
        const size_t g = hh / (hq / hkv);
        Vec score(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (size_t i = 0; i < d; ++i) dot += q[t][hh * d + i] * k[j][g * d + i];
          score[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, score[j]);
        }
        double z = 0;
        for (double& sc : score) z += (sc = std::exp(sc - mx));
        for (size_t j = 0; j <= t; ++j)
          for (size_t i = 0; i < d; ++i) out[t][hh * d + i] += score[j] / z * v[j][g * d + i];
      }
    const Mat wg = M(p + "mlp.gate_proj.weight"), wu = M(p + "mlp.up_proj.weight"),
              wd = M(p + "mlp.down_proj.weight");
    for (size_t t = 0; t < L; ++t) {
      const Vec o = matvec(wo, out[t]);
      for (size_t i = 0; i < o.size(); ++i) h[t][i] += o[i];
      const Vec x = rmsnorm(h[t], n2, s.eps);
      Vec g = matvec(wg, x), u = matvec(wu, x);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Vec m = matvec(wd, g);
      for (size_t i = 0; i < m.size(); ++i) h[t][i] += m[i];
    }
  }
  const Vec nf = V("model.norm.weight");
  const Mat head = s.tied ? emb : M("lm_head.weight");
  Mat logits(L);
  for (size_t t = 0; t < L; ++t) logits[t] = matvec(head, rmsnorm(h[t], nf, s.eps));
  return logits;
}

double worst_vs_reference(const at::Tensor& logits, const Mat& ref) {
  double worst = 0;
  for (size_t t = 0; t < ref.size(); ++t)
    for (size_t j = 0; j < ref[t].size(); ++j)
      worst = std::max(worst, std::abs(logits[t][j].item<double>() - ref[t][j]));
  return worst;
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor t = at::randint(0, vocab, {n}, at::TensorOptions().dtype(at::kLong));
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

TEST(ModelForward, LlamaMatchesPlainLoopReference) {
  TempDir tmp;
  TinySpec spec;  // 2 layers, 4 query heads over 2 kv heads, untied
  testing::write_tiny_checkpoint(tmp.file("m"), spec, 7);
  const Model model(tmp.file("m"));
  EXPECT_EQ(model.config().num_kv_heads, 2);
  const auto ids = random_ids(23, spec.vocab, 3);
  DenseBackend dense;
  ForwardOptions all;
  all.all_logits = true;
  all.token_chunk = 5;  // exercises the chunked MLP
  const ForwardResult r = model.forward(ids, dense, all);
  ASSERT_EQ(r.logits.size(0), 23);
  const Mat ref = reference_logits(tmp.file("m"), spec, ids);
  EXPECT_LT(worst_vs_reference(r.logits, ref), 2e-4);
  // Default: the last position only.
  const ForwardResult last = model.forward(ids, dense);
  ASSERT_EQ(last.positions, std::vector<int64_t>{22});
  EXPECT_LT((last.logits[0] - r.logits[22]).abs().max().item<double>(), 1e-5);
}

TEST(ModelForward, Qwen2BiasAndTiedEmbeddingsMatchReference) {
  TempDir tmp;
  TinySpec spec;
  spec.architecture = "Qwen2ForCausalLM";
  spec.qkv_bias = true;
  spec.tied = true;
  spec.layers = 1;
  spec.kv_heads = 1;
  spec.rope_theta = 1000000.0;
  testing::write_tiny_checkpoint(tmp.file("q"), spec, 11);
  const Model model(tmp.file("q"));
  EXPECT_TRUE(model.config().qkv_bias);
  const auto ids = random_ids(19, spec.vocab, 5);
  DenseBackend dense;
  ForwardOptions all;
  all.all_logits = true;
  const ForwardResult r = model.forward(ids, dense, all);
  EXPECT_LT(worst_vs_reference(r.logits, reference_logits(tmp.file("q"), spec, ids)), 2e-4);
}

TEST(ModelForward, Bf16WeightsLoadAndKvCacheDecodingMatchesPrefill) {
  TempDir tmp;
  TinySpec spec;
  testing::write_tiny_checkpoint(tmp.file("b"), spec, 5, at::kBFloat16);
  const Model model(tmp.file("b"));
  EXPECT_EQ(model.dtype(), at::kFloat);  // CPU computes in float32
  const auto ids = random_ids(30, spec.vocab, 9);
  DenseBackend dense;
  ForwardOptions all;
  all.all_logits = true;
  const ForwardResult full = model.forward(ids, dense, all);

  // Prefill 25 tokens into a cache, then feed 5 one by one.
  KVCache cache;
  std::vector<int64_t> prefix(ids.begin(), ids.begin() + 25);
  const ForwardResult pre = model.forward(prefix, dense, {}, &cache, 5);
  EXPECT_LT((pre.logits[0] - full.logits[24]).abs().max().item<double>(), 1e-4);
  for (int64_t t = 25; t < 30; ++t) {
    const at::Tensor step = model.decode_step(ids[static_cast<size_t>(t)], cache);
    EXPECT_LT((step - full.logits[t]).abs().max().item<double>(), 1e-4) << "t=" << t;
  }
  EXPECT_EQ(cache.length, 30);
  EXPECT_THROW(model.decode_step(1, cache), Error);  // capacity reached

  // Greedy generation agrees with argmax over repeated full forward passes.
  std::vector<int64_t> seq(ids.begin(), ids.begin() + 10);
  const GenerateResult g = model.generate(seq, 4, dense);
  ASSERT_EQ(g.tokens.size(), 4u);
  for (int64_t tok : g.tokens) {
    EXPECT_EQ(tok, model.forward(seq, dense).logits[0].argmax().item<int64_t>());
    seq.push_back(tok);
  }
}

TEST(ModelForward, NllMatchesLogSoftmaxOfAllLogits) {
  TempDir tmp;
  TinySpec spec;
  spec.layers = 1;
  testing::write_tiny_checkpoint(tmp.file("n"), spec, 2);
  const Model model(tmp.file("n"));
  const auto ids = random_ids(17, spec.vocab, 1);
  DenseBackend dense;
  ForwardOptions o;
  o.all_logits = true;
  o.nll = true;
  o.token_chunk = 4;
  const ForwardResult r = model.forward(ids, dense, o);
  ASSERT_EQ(r.nll.size(0), 16);
  const at::Tensor logp = at::log_softmax(r.logits, -1);
  for (int64_t t = 0; t + 1 < 17; ++t)
    EXPECT_NEAR(r.nll[t].item<double>(), -logp[t][ids[static_cast<size_t>(t + 1)]].item<double>(),
                1e-4);
  EXPECT_THROW(model.forward({0, 1, spec.vocab}, dense), Error);  // out of vocabulary
}

TEST(ModelInputs, TokenIdFilesTextAndHdf5) {
  TempDir tmp;
  testing::write_text(tmp.file("ids.txt"), "256 72, 105\n10\n");
  EXPECT_EQ(read_token_ids(tmp.file("ids.txt")), (std::vector<int64_t>{256, 72, 105, 10}));
  testing::write_text(tmp.file("bad.txt"), "1 2\n3 x4\n");
  try {
    read_token_ids(tmp.file("bad.txt"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'x4'"), std::string::npos) << e.what();
  }

  const std::string h5 = tmp.file("ids.h5");
  const hid_t file = H5Fcreate(h5.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims[2] = {1, 4};
  const int32_t data[4] = {256, 1, 2, 3};
  const hid_t space = H5Screate_simple(2, dims, nullptr);
  const hid_t ds = H5Dcreate2(file, "input_ids", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(ds);
  H5Sclose(space);
  H5Fclose(file);
  EXPECT_EQ(read_token_ids(h5), (std::vector<int64_t>{256, 1, 2, 3}));
  EXPECT_THROW(read_token_ids(h5, "nope"), Error);
}

}  // namespace
}  // namespace xattn::model
