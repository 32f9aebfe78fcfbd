// dsv4 detokenize: token ids -> text with the model directory's tokenizer.json.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

// Accepts "5", "5,6", "[5, 6]": ids separated by spaces, commas or JSON brackets.
void parse_ids(const std::string& arg, std::vector<int32_t>& out) {
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(cur, &used);
    } catch (...) {
      used = 0;
    }
    if (used != cur.size() || v < 0 || v > INT32_MAX)
      throw Error("detokenize: \"" + cur + "\" is not a token id");
    out.push_back(static_cast<int32_t>(v));
    cur.clear();
  };
  for (char c : arg) {
    if (c == ',' || c == '[' || c == ']' || c == ' ' || c == '\t' || c == '\n') {
      flush();
    } else {
      cur += c;
    }
  }
  flush();
}

int run_detokenize(int argc, char** argv) {
  CLI::App app{
      "Decode token IDS to text with DIR/tokenizer.json and print it exactly (no newline added). "
      "Bytes that do not form UTF-8 print as U+FFFD.",
      "dsv4 detokenize"};
  std::string model_dir;
  std::vector<std::string> id_args;
  bool skip_special = false;
  app.add_option("-m,--model", model_dir,
                 "model directory holding tokenizer.json (and optionally tokenizer_config.json)")
      ->required();
  app.add_flag("--skip-special", skip_special, "drop special tokens (skip_special_tokens=True)");
  app.add_option("ids", id_args, "token ids: separate arguments, '1,2,3' or a JSON array '[1,2,3]'")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<int32_t> ids;
  for (const auto& a : id_args) parse_ids(a, ids);
  auto tok = tok::Tokenizer::load(model_dir);
  std::string text = tok.decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace
DSV4_COMMAND("detokenize", "token ids -> text (tokenizer.json of a model dir)", run_detokenize);
}  // namespace dsv4::cli
