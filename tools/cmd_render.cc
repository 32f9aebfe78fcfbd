// dsv4 render: an OpenAI-style message list -> the exact DeepSeek-V4 prompt (or its ids).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "api/chat_encoder.h"
#include "command.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

int run_render(int argc, char** argv) {
  CLI::App app{
      "Render a message list with the DeepSeek-V4 chat encoding (encoding_dsv4.py) and print "
      "the exact prompt (no newline added), or its token ids.",
      "dsv4 render"};
  std::string model_dir, messages_file, effort = "none";
  bool thinking = false, keep_thinking = false, ids = false, no_bos = false;
  app.add_option("-m,--model", model_dir,
                 "model directory holding tokenizer.json (and optionally tokenizer_config.json)")
      ->required();
  app.add_option("--messages", messages_file,
                 "JSON file with the message list (as in golden_chat.jsonl), '-' for stdin")
      ->required();
  app.add_flag("--thinking", thinking, "thinking mode (prompt ends with <think>); default: chat");
  app.add_option("--reasoning-effort", effort,
                 "none|high|max; max adds the maximum-effort preamble in thinking mode")
      ->check(CLI::IsMember({"none", "high", "max"}));
  app.add_flag("--keep-thinking", keep_thinking,
               "keep reasoning of earlier turns (drop_thinking=False)");
  app.add_flag("--no-bos", no_bos, "do not start with <｜begin▁of▁sentence｜>");
  app.add_flag("--ids", ids, "print the prompt's token ids as one JSON array instead of the text");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::string text;
  if (messages_file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream f(messages_file, std::ios::binary);
    if (!f) throw Error(messages_file + ": cannot open");
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  api::ojson messages;
  try {
    messages = api::ojson::parse(text);
  } catch (const api::ojson::exception& e) {
    throw Error(messages_file + ": not valid JSON: " + e.what());
  }
  api::ChatOptions o;
  o.thinking = thinking;
  o.reasoning_effort = api::parse_reasoning_effort(effort);
  o.drop_thinking = !keep_thinking;
  o.add_bos = !no_bos;
  // Load the tokenizer first so that a bad -m fails even without --ids.
  auto tok = tok::Tokenizer::load(model_dir);
  std::string prompt = api::render_chat(messages, o);
  if (ids) {
    std::printf("%s\n", nlohmann::json(tok.encode(prompt)).dump().c_str());
  } else {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  }
  return 0;
}

}  // namespace
DSV4_COMMAND("render", "chat messages -> exact DeepSeek-V4 prompt text or ids", run_render);
}  // namespace dsv4::cli
