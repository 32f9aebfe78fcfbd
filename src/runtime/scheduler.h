// Continuous batching: one worker thread drives Model::forward over up to `n_parallel` sequences
// per step. Every step runs ONE batched forward call, so the weights are read once for all active
// sequences: decoding sequences bring one token each, sequences still prefilling bring one prompt
// chunk each (within a per-step prefill token budget, so a long prompt is spread over several
// steps and the other sequences keep streaming). Requests join between steps from a bounded FIFO
// queue; submit() refuses (returns null) when the queue is full so the caller can answer 503.
//
// Each request gets a RequestHandle: a thread-safe event channel (tokens with their text, then one
// final event). cancel() — e.g. on client disconnect — frees the sequence at the next step; a
// deadline does the same with StopReason::kInterrupted and `timed_out` set.
//
// Per-sequence work (sampling, detokenizing, stop strings) is SequenceGenerator's; this file only
// batches. A test hook (`forced`) replaces the sampled tokens by a fixed list (where a constraint
// allows them), for exercising the server's tool-call and reasoning paths with a random-weight
// model.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"

namespace dsv4 {

class ThreadPool;
namespace tok {
class Tokenizer;
}

struct SchedulerOptions {
  int n_parallel = 4;        // sequences decoded together (slots)
  int64_t n_ctx = 0;         // context per sequence (0: model max_position_embeddings)
  int prefill_chunk = 256;   // tokens per prefill chunk of one sequence
  int prefill_budget = 512;  // prompt tokens per step over all sequences (≥ prefill_chunk)
  int max_queue = 64;        // waiting requests beyond the slots; more → submit() refuses
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0;
};

struct GenEvent {
  enum class Kind { kToken, kDone };
  Kind kind = Kind::kToken;
  // kToken
  int32_t token = -1;
  std::string text;               // text released by this token (stop-string safe, valid UTF-8)
  float logprob = 0;              // when logprobs were asked for
  std::vector<TokenLogprob> top;  // top_logprobs alternatives
  // kDone
  StopReason stop = StopReason::kNone;
  bool timed_out = false;
  std::string error;  // non-empty: the request failed (e.g. forward threw)
  int64_t prompt_tokens = 0, gen_tokens = 0;
  double prompt_s = 0, gen_s = 0;
};

struct GenRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  GenerationParams gen;  // n_ctx / prefill_chunk are taken from the scheduler
  int logprobs = -1;     // -1: none; k ≥ 0: the token's logprob and the top k
  // Test hook: emit these tokens (then EOS) instead of sampling, unless gen.after_forced
  // forbids one (the model's choice among the allowed tokens is taken then).
  std::vector<int32_t> forced;
  bool force = false;
  double timeout_s = 0;  // 0: none
};

class RequestHandle {
 public:
  // Waits up to `wait` for the next event; false on timeout.
  bool next(GenEvent& ev, std::chrono::milliseconds wait);
  // Frees the sequence at the next step (no more events after the final kDone).
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  uint64_t id() const { return id_; }

 private:
  friend class Scheduler;
  void push(GenEvent ev);
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenEvent> events_;
  std::atomic<bool> cancelled_{false};
  uint64_t id_ = 0;
};

struct SchedulerStats {
  int active = 0;  // sequences in slots
  int queued = 0;  // waiting for a slot
  int n_parallel = 0;
  size_t kv_bytes = 0;  // KV/state memory of the active sequences
  uint64_t requests_done = 0, requests_cancelled = 0, requests_timed_out = 0;
  uint64_t prompt_tokens = 0, gen_tokens = 0;
  double prompt_s = 0, gen_s = 0;  // forward time attributed to prompt / generated tokens
  uint64_t steps = 0;
  uint64_t batch_seqs = 0;  // sum over steps of sequences in the batch
};

class Scheduler {
 public:
  Scheduler(const Model& model, const tok::Tokenizer* tok, ThreadPool& pool,
            const SchedulerOptions& opts);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Throws dsv4::Error if the prompt is empty or does not fit the context (the
  // message names the limit); returns null when the queue is full.
  std::shared_ptr<RequestHandle> submit(GenRequest req);

  SchedulerStats stats() const;
  int64_t n_ctx() const { return n_ctx_; }
  const SchedulerOptions& options() const { return opts_; }

 private:
  struct Slot;
  struct Pending {
    GenRequest req;
    std::shared_ptr<RequestHandle> handle;
    std::chrono::steady_clock::time_point deadline;
  };
  void loop();
  void step(std::vector<Slot*>& active);
  void finish_slot(Slot& s, StopReason r, const std::string& error, bool timed_out,
                   std::string tail);

  const Model& model_;
  const tok::Tokenizer* tok_;
  ThreadPool& pool_;
  SchedulerOptions opts_;
  int64_t n_ctx_ = 0;
  int vocab_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stop_ = false;
  std::atomic<uint64_t> next_id_{1};
  SchedulerStats stats_;  // guarded by mu_
  ForwardResult fr_;
  std::vector<float> forced_row_;
  std::thread thread_;
};

}  // namespace dsv4
