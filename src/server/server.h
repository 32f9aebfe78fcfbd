// `dsv4 serve`: an OpenAI- and Anthropic-compatible HTTP server over the continuous-batching
// Scheduler (runtime/scheduler.h).
//
// Endpoints: GET /health, /v1/models, /v1/models/{id}, /metrics; POST /v1/chat/completions,
// /v1/completions, /v1/responses, /v1/messages, /tokenize, /detokenize. Every 4xx/5xx answer
// carries {"error":{"message","type","param","code"}} (plus "type":"error" on /v1/messages, the
// Anthropic shape). The HTTP layer is cpp-httplib; JSON is nlohmann-json.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "model/model.h"

namespace dsv4::server {

struct ServerOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8000;
  int n_parallel = 4;    // -np
  int64_t n_ctx = 4096;  // -c, per sequence (0: the model's maximum)
  int threads = 0;       // -t compute threads (0: one per physical core)
  bool pin = false;      // --pin: bind compute threads to CPUs
  ModelOptions::ExpertPrefetch expert_prefetch = ModelOptions::ExpertPrefetch::kAuto;
  int http_threads = 0;    // 0: n_parallel + max_queue + 16
  std::string api_key;     // empty: no auth
  std::string alias;       // model id reported (default: the model directory's name)
  double timeout_s = 600;  // per-request limit (0: none)
  int max_queue = 64;      // requests waiting beyond the slots before 503
  int prefill_chunk = 256;
  int prefill_budget = 512;  // prompt tokens per batched step
  size_t max_body_bytes = 8u << 20;
  int max_tokens_limit = 0;  // 0: no cap beyond the context
  bool default_thinking = false;
  bool test_hooks = false;  // enables the "dsv4_force_output" request field (tests only)
  bool verbose = false;
};

class Server {
 public:
  explicit Server(ServerOptions opts);
  ~Server();
  // Binds, then loads the model in the background (/health answers 503 until ready) and serves
  // until stop(). Returns a process exit code. `on_listening(port)` is called once bound.
  int run(const std::function<void(int)>& on_listening = {});
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::server
