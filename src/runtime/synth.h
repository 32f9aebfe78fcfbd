// `dsv4 synth`: deterministic random-weight DeepSeek-V4 checkpoints in the real Hugging Face layout
// (config.json, model.safetensors or shards + model.safetensors.index.json, tokenizer files).
//
// Every tensor of the spec §3.2 table is written with the release's name, dtype and shape: FP8
// e4m3 weights + F8_E8M0 128×128 block scales, routed experts as I8-packed e2m1 + F8_E8M0 per-32
// scales, BF16 embed/head/norms/router/compressors/weights_proj, F32 hc_*/attn_sink/ape/bias, I64
// tid2eid. Values follow the recipe of the shared goldens (measured from ../shared/golden/tiny):
// weights ~ N(0, gain²/fan_in) with the golden's per-kind gains, quantised with power-of-two UE8M0
// scales 2^ceil(log2(amax/448)) (FP8, 128×128 blocks) or 2^ceil(log2(amax/6)) (FP4, 32 per row),
// round-to-nearest-even; RMSNorm weights 1 + 0.1·N; hc bases with the comb diagonal at +2. The
// normal deviates are Irwin–Hall sums of 12 uniforms (exactly unit variance, tails cut at ±6σ).
//
// Output is a pure function of (preset, seed): each tensor's stream is seeded from (seed, name,
// row chunk), so chunks are generated in parallel and written straight to disk (never the whole
// checkpoint in memory; peak ≈ threads × one 128-row chunk).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

struct SynthOptions {
  std::string preset = "tiny";  // tiny | flash-4l | pro-1l
  std::string out_dir;
  uint64_t seed = 0;
  // Directory holding the real V4 tokenizer.json (+ tokenizer_config.json) to copy. Empty or
  // missing files: a minimal byte-level tokenizer.json is written instead (see below).
  std::string tokenizer_dir;
  int threads = 0;               // 0 = hardware concurrency
  size_t max_shard_bytes = 0;    // 0 = preset default (tiny: one file; big presets: ~2 GB shards)
  std::function<void(size_t done, size_t total)> progress;  // bytes of tensor data written
};

struct SynthReport {
  size_t tensor_bytes = 0;   // sum of tensor sizes
  size_t n_tensors = 0;
  int n_shards = 0;
  bool real_tokenizer = false;  // tokenizer files copied (else the minimal fallback was written)
  std::vector<std::string> files;  // everything written, relative to out_dir
};

// Names of the presets, and their config.json (all keys of spec §1 incl. compress_ratios with the
// trailing MTP entry). Throws dsv4::Error for an unknown preset.
std::vector<std::string> synth_presets();
nlohmann::ordered_json synth_config(const std::string& preset);

// Writes the checkpoint. Creates out_dir if needed; overwrites files of the same names.
SynthReport synth_checkpoint(const SynthOptions& opts);

// The fallback tokenizer.json when no real tokenizer is available: byte-level BPE without merges
// (every byte is one token, ids 3…258), the V4 special/added tokens at their real ids (BOS 0, EOS 1,
// <｜User｜> 128803, <｜Assistant｜> 128804, <think> 128821, </think> 128822, …), and a filler entry
// for every other id below 129280 so any sampled id decodes. Encoding text therefore costs one
// token per byte; chat rendering works because the special strings are matched literally.
std::string minimal_tokenizer_json();

}  // namespace dsv4
