// dsv4 logits: float32 logits of every position of a token-id sequence (a stable interface used
// by release checks): one prefill (optionally chunked), or prefill then token-by-token decode.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "gen_common.h"
#include "model/model.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4::cli {
namespace {

std::vector<int32_t> read_ids_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open ids file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_array()) throw Error(path + ": expected a JSON array of token ids");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer())
      throw Error(path + ": element " + std::to_string(i) + " is not an integer");
    const int64_t v = j[i].get<int64_t>();
    if (v < 0 || v > INT32_MAX)
      throw Error(path + ": element " + std::to_string(i) + " = " + std::to_string(v) +
                  " is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw Error(path + ": the ids array is empty");
  return ids;
}

int run_logits(int argc, char** argv) {
  CLI::App app{"Write float32 logits [len(ids), vocab] for every position of a token-id sequence",
               "dsv4 logits"};
  std::string model_dir, ids_file, out_file;
  size_t chunk = 0;
  int64_t decode_from = -1;
  int threads = 0;
  bool pin = false;
  bool exact_kv = false;
  app.add_option("-m,--model", model_dir, "model directory (config.json + safetensors)")
      ->required();
  app.add_option("--ids-file", ids_file, "JSON array of token ids")->required();
  app.add_option("--out", out_file, "output file: float32 little-endian [len(ids), vocab]")
      ->required();
  app.add_option("--chunk", chunk, "prefill in chunks of N tokens (default: one chunk)");
  app.add_option("--decode-from", decode_from,
                 "prefill ids[0:P) then feed the rest one token at a time");
  add_thread_options(app, threads, pin);
  app.add_flag("--exact-kv", exact_kv,
               "debug: keep KV / indexer caches in fp32 without FP8/FP4/bf16 rounding");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const std::vector<int32_t> ids = read_ids_file(ids_file);
  ModelOptions mo;
  mo.exact_kv = exact_kv;
  auto model = Model::load(model_dir, mo);
  const size_t V = model->config().vocab_size;
  if (decode_from > static_cast<int64_t>(ids.size())) {
    throw Error("--decode-from " + std::to_string(decode_from) + " is past the end of the " +
                std::to_string(ids.size()) + " ids");
  }
  ThreadPool pool(threads, pin);
  SequenceState seq = model->new_sequence();
  std::FILE* f = std::fopen(out_file.c_str(), "wb");
  if (!f) throw Error(out_file + ": cannot open for writing");
  ForwardResult res;
  size_t done = 0;
  auto step = [&](size_t n) {
    BatchItem item;
    item.seq = &seq;
    item.tokens = std::span<const int32_t>(ids.data() + done, n);
    item.all_logits = true;
    model->forward(std::span<const BatchItem>(&item, 1), pool, res);
    if (std::fwrite(res.logits.data(), sizeof(float), n * V, f) != n * V) {
      std::fclose(f);
      throw Error(out_file + ": write failed");
    }
    done += n;
  };
  const size_t prefill_end = decode_from >= 0 ? static_cast<size_t>(decode_from) : ids.size();
  const size_t c = chunk > 0 ? chunk : std::max<size_t>(prefill_end, 1);
  while (done < prefill_end) step(std::min(c, prefill_end - done));
  while (done < ids.size()) step(1);
  if (std::fclose(f) != 0) throw Error(out_file + ": close failed");
  return 0;
}

}  // namespace

DSV4_COMMAND("logits", "float32 logits of every position of a token-id sequence", run_logits);

}  // namespace dsv4::cli
