// The synthetic `tiny` checkpoint (seed 0, the real V4 tokenizer) that the runtime, server and
// command-line tests run on, written once per build tree (test::cached_dir). Header-only because
// test_support sits below the runtime layer that writes checkpoints.
#pragma once

#include <filesystem>
#include <stdexcept>

#include "runtime/synth.h"
#include "test_support.h"

namespace dsv4::test {

inline const std::filesystem::path& synth_tiny() {
  return cached_dir("synth-tiny", [](const std::filesystem::path& out) {
    SynthOptions o;
    o.preset = "tiny";
    o.seed = 0;
    o.out_dir = out.string();
    o.tokenizer_dir = (shared_dir() / "tokenizer").string();
    o.threads = 2;
    const SynthReport r = synth_checkpoint(o);
    if (!r.real_tokenizer)
      throw std::runtime_error("synth tiny: the real tokenizer was not copied");
  });
}

}  // namespace dsv4::test
