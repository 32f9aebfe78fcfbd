// dsv4 tokenize: text -> token ids with the model directory's tokenizer.json.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "command.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv4::cli {
namespace {

int run_tokenize(int argc, char** argv) {
  CLI::App app{
      "Tokenize TEXT (or stdin with '-') with DIR/tokenizer.json. No BOS is added; special-token "
      "strings such as <｜User｜> become their ids. Input must be valid UTF-8 (invalid input is "
      "rejected with the byte offset).",
      "dsv4 tokenize"};
  std::string model_dir, text;
  bool ids_only = false;
  app.add_option("-m,--model", model_dir,
                 "model directory holding tokenizer.json (and optionally tokenizer_config.json)")
      ->required();
  app.add_flag("--ids-only", ids_only, "print only the ids, as one JSON array on one line");
  app.add_option("text", text, "the text to tokenize, or '-' to read raw UTF-8 from stdin")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (text == "-") {
    std::cin >> std::noskipws;
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto tok = tok::Tokenizer::load(model_dir);
  auto ids = tok.encode(text);
  if (ids_only) {
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
    return 0;
  }
  // One line per token: id, then the token's text as a JSON string (partial UTF-8 shows as
  // U+FFFD).
  for (int32_t id : ids) {
    std::string piece;
    tok::append_utf8_lossy(piece, tok.token_bytes(id));
    std::printf("%d\t%s%s\n", id, nlohmann::json(piece).dump().c_str(),
                tok.is_special(id) ? "\t(special)" : tok.is_added(id) ? "\t(added)" : "");
  }
  std::printf("%zu tokens\n", ids.size());
  return 0;
}

}  // namespace
DSV4_COMMAND("tokenize", "text -> token ids (tokenizer.json of a model dir)", run_tokenize);
}  // namespace dsv4::cli
