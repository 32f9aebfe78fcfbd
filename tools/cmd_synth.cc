// `dsv4 synth`: writes a deterministic random-weight DeepSeek-V4 checkpoint (see runtime/synth.h).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "command.h"
#include "gen_common.h"
#include "runtime/synth.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

int synth_main(int argc, char** argv) {
  CLI::App app{
      "Write a synthetic DeepSeek-V4 checkpoint with deterministic random weights in the real "
      "Hugging Face layout (config.json, FP8/FP4/BF16 safetensors with E8M0 scales, tokenizer "
      "files). "
      "The weights are random: output text is meaningless; use it to test loading, speed and "
      "plumbing.",
      "dsv4 synth"};
  SynthOptions o;
  std::string preset_help =
      "tiny (dim 256, 7 layers + MTP, ~150 MB), flash-4l (exact V4-Flash dims, 4 layers, 32 "
      "experts, "
      "~4.5 GB), pro-1l (exact V4-Pro dims, 1 layer, 8 experts, ~5 GB)";
  app.add_option("--preset", o.preset, preset_help)
      ->required()
      ->check(CLI::IsMember(synth_presets()));
  app.add_option("-o,--output", o.out_dir, "output directory (created if needed)")->required();
  int64_t seed = 0;
  app.add_option("--seed", seed,
                 "seed of the weights (default 0); same preset + seed = identical files");
  app.add_option("--tokenizer-dir", o.tokenizer_dir,
                 "copy tokenizer.json / tokenizer_config.json from here (e.g. "
                 "../shared/tokenizer); without it a "
                 "minimal byte-level tokenizer.json is written");
  app.add_option("-t,--threads", o.threads, "worker threads (default: all cores)")
      ->check(kThreadsRange);
  bool progress = false;
  app.add_flag("--progress", progress, "show a progress bar even when stderr is not a terminal");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.seed = static_cast<uint64_t>(seed);
  ProgressBar bar(progress || stderr_is_tty(), "writing", true);
  o.progress = [&](size_t d, size_t t) {
    bar.update(static_cast<int64_t>(d), static_cast<int64_t>(t));
  };
  const auto t0 = std::chrono::steady_clock::now();
  SynthReport r = synth_checkpoint(o);
  bar.finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    std::ofstream readme(std::filesystem::path(o.out_dir) / "README.md");
    readme
        << "# Synthetic DeepSeek-V4 checkpoint (random weights)\n\n"
        << "Written by `dsv4 synth --preset " << o.preset << " --seed " << seed
        << "`. The weights are "
        << "deterministic random numbers in the real Hugging Face layout; the model's output is "
           "meaningless.\n"
        << (r.real_tokenizer
                ? "Tokenizer files copied from " + o.tokenizer_dir + ".\n"
                : "tokenizer.json is a minimal byte-level stand-in (one token per byte), not the "
                  "real V4 tokenizer.\n");
  }
  std::fprintf(
      stderr, "synth: wrote %s (%zu tensors, %.2f GB in %d file%s) in %.1f s; tokenizer: %s\n",
      o.out_dir.c_str(), r.n_tensors, r.tensor_bytes / 1e9, r.n_shards, r.n_shards > 1 ? "s" : "",
      s, r.real_tokenizer ? "real V4 files copied" : "minimal byte-level fallback");
  return 0;
}

}  // namespace

DSV4_COMMAND("synth",
             "write a synthetic random-weight checkpoint (--preset tiny|flash-4l|pro-1l -o DIR)",
             synth_main);

}  // namespace dsv4::cli
