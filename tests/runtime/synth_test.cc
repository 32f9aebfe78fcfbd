// `dsv4 synth` checkpoints: layout identical to the golden checkpoints and the spec tensor table,
// valid encodings, determinism, loadable by the engine with activations in range.
#include "runtime/synth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "model/weights.h"
#include "numerics/formats.h"
#include "runtime/safetensors_writer.h"
#include "synth_tiny.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path& tiny_dir() { return test::synth_tiny(); }

TEST(Synth, TinyHasTheGoldenLayout) {
  auto ck = Checkpoint::open(tiny_dir().string());
  ModelConfig cfg = ModelConfig::from_file((tiny_dir() / "config.json").string());
  EXPECT_EQ(cfg.vocab_size, 129280);
  EXPECT_EQ(cfg.compress_ratios, (std::vector<int>{0, 0, 4, 128, 4, 128, 4, 0}));
  validate_checkpoint(*ck, cfg);
  // Same names and dtypes as DeepSeek's reference tiny checkpoint; same shapes except the
  // vocabulary dimension (the golden uses vocab 1024).
  std::ifstream in(test::shared_dir() / "golden" / "tiny" / "tensors.json");
  nlohmann::json golden = nlohmann::json::parse(in);
  EXPECT_EQ(golden.size(), ck->tensors().size());
  for (auto& [name, g] : golden.items()) {
    const TensorInfo* t = ck->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(dtype_name(t->dtype), g["dtype"].get<std::string>()) << name;
    std::vector<int64_t> gs = g["shape"].get<std::vector<int64_t>>();
    if (name == "embed.weight" || name == "head.weight" ||
        name.find("tid2eid") != std::string::npos)
      gs[0] = 129280;
    EXPECT_EQ(t->shape, gs) << name;
  }
  // The golden config keys are all there (and nothing the engine ignores is missing).
  std::ifstream gc(test::shared_dir() / "golden" / "tiny" / "config.json");
  nlohmann::json gj = nlohmann::json::parse(gc);
  std::ifstream sc(tiny_dir() / "config.json");
  nlohmann::json sj = nlohmann::json::parse(sc);
  for (auto& [k, v] : gj.items()) {
    EXPECT_TRUE(sj.contains(k)) << k;
    if (k != "vocab_size" && k != "max_position_embeddings") {
      EXPECT_EQ(sj[k], v) << k;
    }
  }
}

TEST(Synth, EncodingsAreValidAndPowerOfTwoScaled) {
  auto ck = Checkpoint::open(tiny_dir().string());
  size_t fp8 = 0, fp4 = 0;
  for (const auto& [name, t] : ck->tensors()) {
    if (t.dtype == DType::kF8_E8M0) {
      for (size_t i = 0; i < t.nbytes; ++i) {
        ASSERT_NE(t.data[i], 0xff) << name;      // NaN scale
        ASSERT_GT(t.data[i], 127 - 40) << name;  // sane magnitudes
        ASSERT_LT(t.data[i], 127 + 4) << name;
      }
    } else if (t.dtype == DType::kF8_E4M3) {
      ++fp8;
      double sum2 = 0;
      uint8_t maxcode = 0;
      for (size_t i = 0; i < t.nbytes; ++i) {
        uint8_t c = t.data[i];
        ASSERT_NE(c & 0x7f, 0x7f) << name;  // NaN code
        maxcode = std::max<uint8_t>(maxcode, c & 0x7f);
        sum2 += double(e4m3_to_f32(c)) * e4m3_to_f32(c);
      }
      // amax maps into (224, 448]: the block scale is the smallest power of two that fits.
      EXPECT_GE(e4m3_to_f32(maxcode), 224.0f) << name;
      EXPECT_GT(sum2, 0) << name;
    } else if (t.dtype == DType::kI8) {
      ++fp4;
    }
  }
  EXPECT_GT(fp8, 50u);
  EXPECT_EQ(fp4, 3u * 16 * 8);  // 16 experts × 3 matrices × (7 layers + MTP)
  // A dequantised expert row has the intended spread (w1: 3.5/sqrt(dim)).
  const TensorInfo* w = ck->find("layers.3.ffn.experts.5.w1.weight");
  const TensorInfo* s = ck->find("layers.3.ffn.experts.5.w1.scale");
  double sum2 = 0;
  const int64_t rows = w->shape[0], cols = w->shape[1] * 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint8_t byte = w->data[r * cols / 2 + c / 2];
      float v = e2m1_to_f32(c % 2 ? byte >> 4 : byte & 15) *
                e8m0_to_f32(s->data[r * (cols / 32) + c / 32]);
      sum2 += double(v) * v;
    }
  const double rms = std::sqrt(sum2 / double(rows * cols));
  EXPECT_NEAR(rms * std::sqrt(256.0), 3.5, 0.35);
}

TEST(Synth, DeterministicPerSeed) {
  test::TempDir a("synth-a"), b("synth-b");
  SynthOptions o;
  o.preset = "tiny";
  o.out_dir = a.path().string();
  o.seed = 5;
  o.threads = 1;
  synth_checkpoint(o);  // minimal tokenizer fallback
  o.out_dir = b.path().string();
  o.threads = 3;
  o.max_shard_bytes = 60u << 20;  // sharded this time: same tensors, other files
  SynthReport rb = synth_checkpoint(o);
  EXPECT_GT(rb.n_shards, 1);
  EXPECT_TRUE(fs::exists(b.path() / "model.safetensors.index.json"));
  auto ca = Checkpoint::open(a.path().string()), cb = Checkpoint::open(b.path().string());
  auto c0 = Checkpoint::open(tiny_dir().string());
  ASSERT_EQ(ca->tensors().size(), cb->tensors().size());
  size_t differ_from_seed0 = 0;
  for (const auto& [name, t] : ca->tensors()) {
    const TensorInfo* u = cb->find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(t.nbytes, u->nbytes);
    EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes), 0) << name;
    const TensorInfo* z = c0->find(name);
    if (std::memcmp(t.data, z->data, t.nbytes) != 0) ++differ_from_seed0;
  }
  EXPECT_GT(differ_from_seed0, ca->tensors().size() * 9 / 10);
  // The fallback tokenizer loads, round-trips text and decodes every id of the model.
  auto tk = tok::Tokenizer::load(a.path());
  EXPECT_EQ(tk.vocab_size(), 129280u);
  const std::string text = "<｜begin▁of▁sentence｜>Hi <｜User｜>ça va? 世界<｜Assistant｜></think>";
  std::vector<int32_t> ids = tk.encode(text);
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 128822);
  EXPECT_EQ(tk.decode(ids), text);
  std::vector<int32_t> all;
  for (int32_t i = 0; i < 129280; i += 97) all.push_back(i);
  EXPECT_NO_THROW(tk.decode(all));
}

// The table the generator writes reproduces the release's totals (spec §3.1) at full size.
TEST(Synth, FullSizeTablesMatchTheRelease) {
  // compress_ratios: the first two layers as given, then 128 and 4 alternating, then the MTP's 0.
  auto count = [](nlohmann::ordered_json j, int layers, int experts, int r0, int r1, int hash) {
    std::vector<int> ratios = {r0, r1};
    for (int i = 2; i < layers; ++i) ratios.push_back(i % 2 ? 128 : 4);
    ratios.push_back(0);
    j["num_hidden_layers"] = layers;
    j["n_routed_experts"] = experts;
    j["num_hash_layers"] = hash;
    j["compress_ratios"] = ratios;
    ModelConfig c = ModelConfig::from_json_text(j.dump(), "test");
    size_t n = 0, bytes = 0;
    for (const ExpectedTensor& e : expected_tensors(c)) {
      ++n;
      bytes += SafetensorsWriter::nbytes(e.dtype, e.shape);
    }
    return std::make_pair(n, bytes);
  };
  auto f = count(synth_config("flash-4l"), 43, 256, 0, 0, 3);
  EXPECT_EQ(f.first, 69187u);
  EXPECT_EQ(f.second, 159609485896ull);
  auto p = count(synth_config("pro-1l"), 61, 384, 128, 128, 3);
  EXPECT_EQ(p.first, 145116u);
  EXPECT_EQ(p.second, 864704792696ull);
}

TEST(Synth, EngineLoadsTinyAndActivationsStayInRange) {
  auto model = Model::load(tiny_dir().string());
  ThreadPool pool(2);
  SequenceState seq = model->new_sequence();
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 7919) % 129280);
  BatchItem it;
  it.seq = &seq;
  it.tokens = ids;
  it.all_logits = true;
  ForwardResult fr;
  ForwardOptions fo;
  fo.record_layer_rms = true;
  model->forward(std::span<const BatchItem>(&it, 1), pool, fr, fo);
  ASSERT_GE(fr.layer_rms.size(), 7u);
  float lo = 1e9f, hi = 0;
  for (size_t l = 0; l < 7; ++l)
    for (float r : fr.layer_rms[l]) {
      lo = std::min(lo, r);
      hi = std::max(hi, r);
    }
  EXPECT_GT(lo, 0.3f);
  EXPECT_LT(hi, 6.0f);
  double s2 = 0;
  for (float v : fr.logits) {
    ASSERT_TRUE(std::isfinite(v));
    s2 += double(v) * v;
  }
  const double std_logits = std::sqrt(s2 / fr.logits.size());
  EXPECT_GT(std_logits, 1.0);
  EXPECT_LT(std_logits, 12.0);
  std::printf("[synth tiny] layer RMS %.2f … %.2f, logits rms %.2f\n", lo, hi, std_logits);
}

}  // namespace
}  // namespace dsv4

namespace dsv4 {
namespace {

// Opt-in (big): DSV4_SYNTH_BIG_DIR=<dir written by dsv4 synth --preset flash-4l|pro-1l> checks
// that activations stay in range at the real dimensions too.
TEST(Synth, BigPresetActivationsStayInRange) {
  const char* dir = std::getenv("DSV4_SYNTH_BIG_DIR");
  if (!dir || !*dir)
    GTEST_SKIP() << "set DSV4_SYNTH_BIG_DIR to a flash-4l / pro-1l synth directory";
  auto model = Model::load(dir);
  ThreadPool pool(0);
  SequenceState seq = model->new_sequence();
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 7919 + 11) % model->config().vocab_size);
  BatchItem it;
  it.seq = &seq;
  it.tokens = ids;
  ForwardResult fr;
  ForwardOptions fo;
  fo.record_layer_rms = true;
  model->forward(std::span<const BatchItem>(&it, 1), pool, fr, fo);
  float lo = 1e9f, hi = 0;
  for (size_t l = 0; l < static_cast<size_t>(model->config().n_layers); ++l)
    for (float r : fr.layer_rms[l]) {
      lo = std::min(lo, r);
      hi = std::max(hi, r);
    }
  double s2 = 0;
  for (float v : fr.logits) s2 += double(v) * v;
  const double rms = std::sqrt(s2 / fr.logits.size());
  std::printf("[synth %s] layer RMS %.2f … %.2f, logits rms %.2f\n", dir, lo, hi, rms);
  EXPECT_GT(lo, 0.3f);
  EXPECT_LT(hi, 6.0f);
  EXPECT_GT(rms, 1.0);
  EXPECT_LT(rms, 12.0);
}

}  // namespace
}  // namespace dsv4
