// Continuous-batching payoff: aggregate decode throughput of ONE Model::forward call carrying N
// sequences (one new token each), N ∈ {1, 4, 16}, after a short prefill of each sequence — what
// the server's scheduler runs every step. Counter "tok/s" = N tokens per step / step time.
//
// Model: $DSV4_BENCH_MODEL (e.g. a `dsv4 synth --preset flash-4l` directory, the "larger synthetic
// model"); without it a synth tiny checkpoint is written to a temp dir.
// Run: ./batch_decode_bench [--benchmark_filter=...]   (threads: $DSV4_BENCH_THREADS, default all)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "runtime/synth.h"
#include "util/thread_pool.h"

namespace {

struct Env {
  std::unique_ptr<dsv4::Model> model;
  std::unique_ptr<dsv4::ThreadPool> pool;
  std::string dir;
};

Env& env() {
  static Env e = [] {
    Env x;
    if (const char* m = std::getenv("DSV4_BENCH_MODEL"); m && *m) {
      x.dir = m;
    } else {
      x.dir = (std::filesystem::temp_directory_path() / "dsv4-batch-bench-tiny").string();
      if (!std::filesystem::exists(std::filesystem::path(x.dir) / "config.json")) {
        dsv4::SynthOptions so;
        so.preset = "tiny";
        so.out_dir = x.dir;
        dsv4::synth_checkpoint(so);
      }
    }
    x.model = dsv4::Model::load(x.dir);
    const char* t = std::getenv("DSV4_BENCH_THREADS");
    x.pool = std::make_unique<dsv4::ThreadPool>(t ? std::atoi(t) : 0);
    return x;
  }();
  return e;
}

void BM_BatchedDecode(benchmark::State& state) {
  Env& e = env();
  const int n = static_cast<int>(state.range(0));
  const int prompt_len = 32;
  const int V = e.model->config().vocab_size;
  std::vector<dsv4::SequenceState> seqs;
  for (int i = 0; i < n; ++i) seqs.push_back(e.model->new_sequence());
  // Prefill every sequence with a distinct prompt (one batched call).
  std::vector<std::vector<int32_t>> prompts(n);
  std::vector<dsv4::BatchItem> items(n);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < prompt_len; ++k) prompts[i].push_back((1000 + 7919 * (i * prompt_len + k)) % V);
    items[i].seq = &seqs[i];
    items[i].tokens = prompts[i];
  }
  dsv4::ForwardResult fr;
  e.model->forward(items, *e.pool, fr);
  std::vector<int32_t> next(n);
  for (int i = 0; i < n; ++i) next[i] = (17 + 31 * i) % V;
  int64_t tokens = 0;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      items[i].tokens = std::span<const int32_t>(&next[i], 1);
    }
    e.model->forward(items, *e.pool, fr);
    // Greedy next token per sequence (as the scheduler would sample).
    for (int i = 0; i < n; ++i) {
      const float* row = fr.logits.data() + fr.first_row[i] * static_cast<size_t>(V);
      int best = 0;
      for (int v = 1; v < V; ++v)
        if (row[v] > row[best]) best = v;
      next[i] = best;
    }
    tokens += n;
    // Keep the context bounded so every iteration costs about the same.
    if (seqs[0].n_past > prompt_len + 256) state.SkipWithError("context grew too far");
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["seqs"] = n;
}

BENCHMARK(BM_BatchedDecode)->Arg(1)->Arg(4)->Arg(16)->Unit(benchmark::kMillisecond)->Iterations(24)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
