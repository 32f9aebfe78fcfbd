// Reading DeepSeek's reference goldens (../shared/golden) and comparing logits with the
// tolerances its README recommends per numeric mode.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "util/thread_pool.h"

namespace dsv4::test {

struct GoldenRun {
  std::string config;  // e.g. "tiny"
  std::string run;     // e.g. "long"
  std::filesystem::path dir;
  std::vector<int32_t> ids;
  nlohmann::json prompt;    // prompts.json entry
  nlohmann::json manifest;  // manifest.json "files" → "<run>/<mode>"
  std::string name() const { return config + "_" + run; }
};

// Every (config, run) pair found in ../shared/golden/*/manifest.json + prompts.json.
std::vector<GoldenRun> discover_golden_runs();
// One of them, e.g. ("tiny", "long"); throws std::runtime_error naming it if it is missing.
GoldenRun find_golden_run(const std::string& config, const std::string& run);

// Logits of every position of `ids` fed as one prefill to a fresh sequence.
std::vector<float> prefill_all_logits(const Model& m, std::span<const int32_t> ids,
                                      ThreadPool& pool, const ForwardOptions& fo = {});

nlohmann::json read_json(const std::filesystem::path& p);
std::vector<float> read_f32(const std::filesystem::path& p);
std::vector<int32_t> read_i32(const std::filesystem::path& p);

struct Comparison {
  size_t rows = 0;
  double rms_rel = 0, max_abs = 0;
  size_t disagreements = 0;
  std::vector<size_t> disagree_rows;
  std::string str() const;
};

// Engine logits vs reference, both [rows, vocab].
Comparison compare_logits(const std::vector<float>& got, const std::vector<float>& ref,
                          size_t vocab);

// top1 − top2 of one row.
float top_margin(const float* row, size_t vocab);

}  // namespace dsv4::test
