// The DeepSeek-V4 model: weights mapped from a checkpoint directory and the forward pass.
// One call serves a batch of sequences, each bringing its own new tokens (a prefill chunk of
// any length, one decode token, or a few draft tokens) at its own positions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/sequence_state.h"
#include "model/config.h"
#include "model/rope.h"
#include "util/function_ref.h"

namespace dsv4 {

class ThreadPool;
struct ModelWeights;
class Checkpoint;
struct MatrixView;

struct ModelOptions {
  // Debug: keep KV entries and indexer keys in fp32 with no FP8/FP4/bf16 rounding (compares
  // with the reference's mode B). Default: the native production layout (mode D).
  bool exact_kv = false;
  // Routed experts: once the router has picked them, ask the kernel to read their pages in the
  // background (madvise WILLNEED) while the shared expert computes. Pays off when the checkpoint
  // does not stay in the page cache; kAuto turns it on when the checkpoint is larger than 3/4 of
  // physical memory (when it fits, the syscalls would only cost time: ~0.1 ms per expert).
  enum class ExpertPrefetch { kAuto, kOn, kOff } expert_prefetch = ExpertPrefetch::kAuto;
  // Called while mapping / validating with (bytes done, bytes total).
  std::function<void(size_t, size_t)> progress;
};

struct BatchItem {
  SequenceState* seq = nullptr;
  std::span<const int32_t> tokens;  // new tokens at positions seq->n_past, n_past+1, …
  bool all_logits = false;          // logits for every new token (else the last one only)
  bool want_hidden = false;         // also return the final residual stream (MTP input)
  bool no_logits = false;           // skip the LM head entirely (an intermediate prefill chunk)
};

struct ForwardResult {
  // Logits rows, concatenated over the batch items in order: n_tokens rows for an item with
  // all_logits, 1 row otherwise, 0 with no_logits. Row r is logits[r*vocab … (r+1)*vocab).
  std::vector<float> logits;
  std::vector<size_t> first_row;  // per item: index of its first logits row
  // Final residual streams (pre-hc_head) [n_tokens, hc_mult, dim] per item with want_hidden,
  // concatenated; first_hidden[i] = first token row of item i.
  std::vector<float> hidden;
  std::vector<size_t> first_hidden;
  // Debug: RMS over (hc, dim) of each block's output, [n_layers][total new tokens], when asked.
  std::vector<std::vector<float>> layer_rms;
};

// The parts of a forward pass that `dsv4 bench` times and counts bytes for, one by one.
enum class ForwardPart {
  kMhc,        // hc_pre / hc_post of every block and the RMSNorms between (mixer weights)
  kAttention,  // projections, compressors, indexer, KV, sparse attention, output projection
  kMoe,        // router, shared expert and the routed experts
  kHead,       // hc_head, the final norm and the LM head
  kCount
};
const char* forward_part_name(ForwardPart p);

// Wall-clock seconds per part, added up over forward calls; `total` is whole calls, so what is in
// none of the parts (embedding, gathering outputs) is total minus their sum. Timed on the calling
// thread around each part (~20 clock reads per layer).
struct ForwardTimes {
  double seconds[static_cast<int>(ForwardPart::kCount)] = {};
  double total = 0;
};

struct ForwardOptions {
  bool record_layer_rms = false;
  ForwardTimes* times = nullptr;  // when set, each part's time is added here
};

class Model {
 public:
  // Opens and validates `dir` (config.json + safetensors). Throws dsv4::Error naming the file,
  // tensor, field or byte offset of anything malformed.
  static std::unique_ptr<Model> load(const std::string& dir, const ModelOptions& opts = {});
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const ModelOptions& options() const { return opts_; }
  const Checkpoint& checkpoint() const { return *ckpt_; }
  // Whether routed experts are prefetched (ModelOptions::expert_prefetch, kAuto resolved).
  bool prefetches_experts() const { return prefetch_experts_; }
  // What one more token costs the sequence `seq` at its current length (benchmarks): weight bytes
  // read (attention, compressors, indexer, router, shared expert, the k active routed experts,
  // mHC mixers, head, one embedding row), KV bytes read (window, compressed entries attended,
  // every indexer key scored), and multiply-adds (weights + attention + indexer scoring).
  struct TokenCost {
    size_t weight_bytes = 0, kv_bytes = 0;
    // weight_bytes and kv_bytes by the part that reads them (the embedding row is in none).
    size_t part_bytes[static_cast<int>(ForwardPart::kCount)] = {};
    double weight_macs = 0, attention_macs = 0;
    // Part of weight_macs spent on the output (hc_head + LM head): only rows that return logits
    // pay it (in a prefill, usually just the last one).
    double output_macs = 0;
  };
  TokenCost token_cost(const SequenceState& seq) const;
  // The mapped checkpoint bytes (weights and scales, in place) of the matrices token_cost counts,
  // with routed experts 0…k−1 standing for the k the router picks: what `dsv4 bench` streams to
  // measure the bandwidth of the pages decode reads. With `part`, only that part's matrices.
  std::vector<std::span<const uint8_t>> token_weight_ranges(
      std::optional<ForwardPart> part = std::nullopt) const;

  // A fresh sequence with storage as chosen by the options (native or exact).
  SequenceState new_sequence() const;

  // Runs the batch; every item's seq advances by its token count. Sequences must be distinct.
  void forward(std::span<const BatchItem> batch, ThreadPool& pool, ForwardResult& out,
               const ForwardOptions& fopts = {}) const;

  // MTP block (mtp.0): for n consecutive positions starting at seq.mtp_n_past, consumes the main
  // model's final residual streams `hidden` [n, hc, dim] and the *next* token ids, returns
  // logits [n, vocab] in `logits`. Advances seq.mtp_n_past. Requires n_mtp_layers ≥ 1.
  void forward_mtp(SequenceState& seq, const float* hidden, std::span<const int32_t> next_ids,
                   ThreadPool& pool, std::vector<float>& logits) const;

 private:
  Model() = default;
  // Every matrix one decoded token multiplies by (token_cost, token_weight_ranges).
  void for_each_token_matrix(FunctionRef<void(const MatrixView&, ForwardPart)> fn) const;
  ModelConfig cfg_;
  ModelOptions opts_;
  std::unique_ptr<Checkpoint> ckpt_;
  std::unique_ptr<ModelWeights> w_;
  RopeTable rope_plain_, rope_comp_;  // RoPE frequencies of plain and compressed layers
  bool prefetch_experts_ = false;
};

}  // namespace dsv4
