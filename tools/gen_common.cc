#include "gen_common.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace dsv4::cli {

void GenFlags::add_to(CLI::App& app, bool chat) {
  app.add_option("-m,--model", model_dir,
                 "model directory (config.json, *.safetensors, tokenizer.json)")
      ->required();
  add_thread_options(app, threads, pin);
  app.add_option("-c,--ctx-size", n_ctx,
                 "context size in tokens (default: the model's max_position_embeddings)");
  app.add_option("-b,--batch-size", batch, "prompt tokens per prefill forward call (default 256)");
  app.add_option("-n,--n-predict", n_predict,
                 chat ? "max tokens per reply (-1: until EOS or the context is full)"
                      : "max tokens to generate (-1: until EOS or the context is full)");
  app.add_option("--temp", sampling.temperature,
                 "temperature; 0 = greedy (default 1.0, DeepSeek's recommendation)");
  app.add_option("--top-k", sampling.top_k, "top-k sampling (0 = off, default)");
  app.add_option("--top-p", sampling.top_p, "top-p (nucleus) sampling (1.0 = off, default)");
  app.add_option("--min-p", sampling.min_p, "min-p sampling (0 = off, default)");
  app.add_option("--repeat-penalty", sampling.repeat_penalty,
                 "repetition penalty (1.0 = off, default)");
  app.add_option("--repeat-last-n", sampling.penalty_last_n,
                 "tokens the penalties look back at (default 64, -1 = all)");
  app.add_option("--presence-penalty", sampling.presence_penalty,
                 "presence penalty (0 = off, default)");
  app.add_option("--frequency-penalty", sampling.frequency_penalty,
                 "frequency penalty (0 = off, default)");
  app.add_option("-s,--seed", seed,
                 "RNG seed (default: random; the seed used is printed with --verbose timings)");
  app.add_option("--stop", stop, "stop string (repeatable); the text from it on is dropped");
  app.add_flag("--ignore-eos", ignore_eos, "keep generating after the end-of-sentence token");
  app.add_flag("--progress", progress, "show progress bars even when stderr is not a terminal");
  app.add_flag("--exact-kv", exact_kv,
               "debug: fp32 KV cache without FP8/FP4/bf16 storage rounding");
  add_expert_prefetch_option(app, expert_prefetch);
}

void add_thread_options(CLI::App& app, int& threads, bool& pin) {
  app.add_option("-t,--threads", threads, "compute threads (default: one per physical core)")
      ->check(kThreadsRange);
  app.add_flag("--pin", pin,
               "bind each compute thread to its own CPU (one per physical core first)");
}

void add_expert_prefetch_option(CLI::App& app, ModelOptions::ExpertPrefetch& v) {
  using EP = ModelOptions::ExpertPrefetch;
  static const std::map<std::string, EP> names{
      {"auto", EP::kAuto}, {"on", EP::kOn}, {"off", EP::kOff}};
  app.add_option("--expert-prefetch", v,
                 "read the routed experts' pages ahead (madvise) once the router picks them: "
                 "auto (default: when the checkpoint exceeds 3/4 of RAM), on, off")
      ->transform(CLI::CheckedTransformer(names, CLI::ignore_case))
      ->option_text("auto|on|off");
}

void GenFlags::finish() {
  if (seed >= 0) sampling.seed = static_cast<uint64_t>(seed);
  sampling.validate();
  if (batch <= 0) throw Error("-b/--batch-size must be positive");
  if (threads < 0) throw Error("-t/--threads must be >= 0");
  if (n_ctx < 0) throw Error("-c/--ctx-size must be >= 0");
}

bool stderr_is_tty() { return ::isatty(2) == 1; }
bool stdout_is_tty() { return ::isatty(1) == 1; }

ProgressBar::ProgressBar(bool enabled, std::string label, bool bytes, double delay_s)
    : enabled_(enabled),
      bytes_(bytes),
      label_(std::move(label)),
      delay_s_(delay_s),
      start_(std::chrono::steady_clock::now()) {}

static std::string human_bytes(double b) {
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 1000 && i < 4) {
    b /= 1000;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.1f %s" : "%.0f %s", b, u[i]);
  return buf;
}

void ProgressBar::update(int64_t done, int64_t total) {
  if (!enabled_ || total <= 0) return;
  auto now = std::chrono::steady_clock::now();
  const double el = std::chrono::duration<double>(now - start_).count();
  if (el < delay_s_ && done < total) return;
  if (drawn_ && done < total && std::chrono::duration<double>(now - last_).count() < 0.1) return;
  last_ = now;
  drawn_ = true;
  const double frac = static_cast<double>(done) / static_cast<double>(total);
  const int width = 30;
  const int fill = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(fill), '#');
  bar.resize(width, '-');
  const double rate = el > 0 ? done / el : 0;
  const double eta = rate > 0 ? (total - done) / rate : 0;
  char buf[256];
  if (bytes_) {
    std::snprintf(buf, sizeof buf, "\r%s [%s] %5.1f%% %s / %s  ETA %.0f s   ", label_.c_str(),
                  bar.c_str(), 100 * frac, human_bytes(static_cast<double>(done)).c_str(),
                  human_bytes(static_cast<double>(total)).c_str(), eta);
  } else {
    std::snprintf(buf, sizeof buf, "\r%s [%s] %lld / %lld tokens  %.1f tok/s  ETA %.0f s   ",
                  label_.c_str(), bar.c_str(), static_cast<long long>(done),
                  static_cast<long long>(total), rate, eta);
  }
  std::fputs(buf, stderr);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (enabled_ && drawn_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  drawn_ = false;
}

Loaded load_all(const GenFlags& f, bool need_tokenizer) {
  const fs::path dir(f.model_dir);
  if (!fs::exists(dir)) throw Error("model directory " + f.model_dir + " does not exist");
  if (!fs::is_directory(dir)) throw Error(f.model_dir + " is not a directory");
  if (!fs::exists(dir / "config.json")) {
    throw Error("no config.json in " + f.model_dir +
                " (expected a Hugging Face DeepSeek-V4 checkpoint directory)");
  }
  Loaded L;
  const auto t0 = std::chrono::steady_clock::now();
  if (need_tokenizer || fs::exists(dir / "tokenizer.json")) {
    if (!fs::exists(dir / "tokenizer.json")) {
      throw Error("no tokenizer.json in " + f.model_dir +
                  " (copy tokenizer.json and tokenizer_config.json from the model's Hugging Face "
                  "repository)");
    }
    L.tokenizer = tok::Tokenizer::load(dir);
  }
  ModelOptions mo;
  mo.exact_kv = f.exact_kv;
  mo.expert_prefetch = f.expert_prefetch;
  ProgressBar bar(f.progress || stderr_is_tty(), "loading", true);
  mo.progress = [&](size_t d, size_t t) {
    bar.update(static_cast<int64_t>(d), static_cast<int64_t>(t));
  };
  L.model = Model::load(f.model_dir, mo);
  bar.finish();
  L.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t max_ctx = L.model->config().max_position_embeddings;
  if (f.n_ctx > max_ctx) {
    throw Error("-c " + std::to_string(f.n_ctx) +
                " is larger than the model allows (max_position_embeddings = " +
                std::to_string(max_ctx) + ")");
  }
  L.n_ctx = f.n_ctx > 0 ? f.n_ctx : max_ctx;
  if (L.tokenizer &&
      static_cast<int64_t>(L.tokenizer->vocab_size()) > L.model->config().vocab_size) {
    throw Error("tokenizer has " + std::to_string(L.tokenizer->vocab_size()) +
                " ids but the model's vocab_size is " +
                std::to_string(L.model->config().vocab_size));
  }
  return L;
}

void require_utf8(const std::string& s, const std::string& what) {
  const size_t bad = tok::find_invalid_utf8(s);
  if (bad != std::string::npos) {
    throw Error(what + " is not valid UTF-8 (first bad byte at offset " + std::to_string(bad) +
                ")");
  }
}

std::string read_prompt_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read prompt file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  require_utf8(s, "prompt file " + path);
  return s;
}

void print_timings(double load_s, const GenerationTimings& t, StopReason stop) {
  std::fprintf(stderr, "\n");
  if (load_s >= 0) std::fprintf(stderr, "load:      %8.2f s\n", load_s);
  std::fprintf(stderr, "prompt:    %8lld tokens in %7.2f s = %8.2f tok/s\n",
               static_cast<long long>(t.prompt_tokens), t.prompt_s, t.prompt_tok_s());
  std::fprintf(stderr, "generated: %8lld tokens in %7.2f s = %8.2f tok/s  (stop: %s)\n",
               static_cast<long long>(t.gen_tokens), t.gen_s, t.gen_tok_s(),
               stop_reason_name(stop));
}

}  // namespace dsv4::cli
