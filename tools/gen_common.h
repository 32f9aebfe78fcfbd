// Shared pieces of `dsv4 run` and `dsv4 chat`: llama.cpp-style flags, model/tokenizer loading with
// clear errors, a progress bar on stderr, timing lines.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"
#include "util/thread_pool.h"

namespace dsv4::cli {

struct GenFlags {
  std::string model_dir;
  int threads = 0;
  bool pin = false;
  int64_t n_ctx = 0;
  int batch = 256;
  int n_predict = -1;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool progress = false;
  bool exact_kv = false;
  ModelOptions::ExpertPrefetch expert_prefetch = ModelOptions::ExpertPrefetch::kAuto;
  SamplingParams sampling;
  int64_t seed = -1;

  void add_to(CLI::App& app, bool chat);
  // Resolves defaults after parsing (seed).
  void finish();
};

// -t/--threads and --pin (ThreadPool's size and pinning), the same on every command.
// -t N: 0 = one per physical core. The cap (llama.cpp's is 512) turns a typo such as -t 100000
// into an error instead of 100,000 threads started one by one.
inline const CLI::Range kThreadsRange(0, 1024);
// A lower bound with a readable message (CLI11's PositiveNumber writes out 1.8e308 in full).
inline CLI::Validator AtLeast(int64_t min) {
  return CLI::Validator(
      [min](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        return v >= static_cast<double>(min)
                   ? std::string()
                   : "must be at least " + std::to_string(min) + ", got " + s;
      },
      ">=" + std::to_string(min));
}
void add_thread_options(CLI::App& app, int& threads, bool& pin);

// --expert-prefetch auto|on|off (ModelOptions::expert_prefetch).
void add_expert_prefetch_option(CLI::App& app, ModelOptions::ExpertPrefetch& v);

// Terminal progress bar on stderr (only drawn when enabled); redraws at most ~10×/s.
class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label, bool bytes, double delay_s = 0.0);
  void update(int64_t done, int64_t total);
  void finish();  // clears the line

 private:
  bool enabled_, bytes_, drawn_ = false;
  std::string label_;
  double delay_s_;
  std::chrono::steady_clock::time_point start_, last_;
};

bool stderr_is_tty();
bool stdout_is_tty();

struct Loaded {
  std::unique_ptr<Model> model;
  std::optional<tok::Tokenizer> tokenizer;
  double load_s = 0;
  int64_t n_ctx = 0;
};

// Checks the directory (exists, config.json, tokenizer.json unless `need_tokenizer` is false),
// loads the tokenizer and the model (progress bar), validates -c against the config.
Loaded load_all(const GenFlags& f, bool need_tokenizer);

// Reads a prompt file; throws dsv4::Error if it cannot be read or is not valid UTF-8.
std::string read_prompt_file(const std::string& path);
// Throws dsv4::Error naming `what` and the byte offset if `s` is not valid UTF-8.
void require_utf8(const std::string& s, const std::string& what);

void print_timings(double load_s, const GenerationTimings& t, StopReason stop);

}  // namespace dsv4::cli
