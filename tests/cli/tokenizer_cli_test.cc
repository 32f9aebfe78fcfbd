// Runs `dsv4 tokenize / detokenize / render` on ../shared/tokenizer and checks the goldens.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace dsv4 {
namespace {

using json = nlohmann::ordered_json;

std::string tok_dir() { return (test::shared_dir() / "tokenizer").string(); }

std::vector<json> read_jsonl(const std::string& name) {
  std::ifstream f(test::shared_dir() / "tokenizer" / name);
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

void write_file(const std::filesystem::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

std::string run_ok(const std::string& cmd) {
  std::string out;
  int rc = test::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  return out;
}

TEST(TokenizerCli, TokenizeIdsOnlyMatchesGoldenEncode) {
  test::TempDir dir("tok-cli");
  auto cases = read_jsonl("golden_encode.jsonl");
  // Each run loads tokenizer.json (~0.5 s), so sample: the library tests cover all 538.
  for (size_t i = 0; i < cases.size(); i += 60) {
    auto in = dir.path() / "in.txt";
    write_file(in, cases[i]["text"].get<std::string>());
    std::string out = run_ok(test::dsv4_binary() + " tokenize -m " + tok_dir() +
                             " --ids-only - < " + in.string());
    EXPECT_EQ(out, cases[i]["ids"].dump() + "\n") << "i=" << i;
  }
}

TEST(TokenizerCli, TokenizeHumanOutputAndArgument) {
  std::string out = run_ok(test::dsv4_binary() + " tokenize -m " + tok_dir() + " 'Hello, world!'");
  EXPECT_EQ(out, "19923\t\"Hello\"\n14\t\",\"\n2058\t\" world\"\n3\t\"!\"\n4 tokens\n");
}

TEST(TokenizerCli, DetokenizeMatchesGoldenDecode) {
  auto cases = read_jsonl("golden_decode.jsonl");
  for (size_t i = 0; i < cases.size(); i += 4) {
    const auto& c = cases[i];
    std::string cmd = test::dsv4_binary() + " detokenize -m " + tok_dir() +
                      (c["skip_special_tokens"].get<bool>() ? " --skip-special " : " ");
    for (const auto& id : c["ids"]) cmd += " " + std::to_string(id.get<int>());
    EXPECT_EQ(run_ok(cmd), c["text"].get<std::string>()) << c["name"];
  }
  EXPECT_EQ(run_ok(test::dsv4_binary() + " detokenize -m " + tok_dir() + " '[19923,14]' 2058,3"),
            "Hello, world!");
}

TEST(TokenizerCli, RenderMatchesGoldenChat) {
  test::TempDir dir("render-cli");
  auto cases = read_jsonl("golden_chat.jsonl");
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const json& a = c["encode_args"];
    auto f = dir.path() / "m.json";
    write_file(f, c["messages"].dump());
    std::string cmd = test::dsv4_binary() + " render -m " + tok_dir() + " --messages " + f.string();
    if (a["thinking_mode"] == "thinking") cmd += " --thinking";
    if (a["reasoning_effort"].is_string())
      cmd += " --reasoning-effort " + a["reasoning_effort"].get<std::string>();
    if (!a["drop_thinking"].get<bool>()) cmd += " --keep-thinking";
    if (!a["add_default_bos_token"].get<bool>()) cmd += " --no-bos";
    EXPECT_EQ(run_ok(cmd), c["prompt"].get<std::string>()) << c["name"];
    if (i % 4 == 0) {
      EXPECT_EQ(run_ok(cmd + " --ids"), c["ids"].dump() + "\n") << c["name"];
    }
  }
}

TEST(TokenizerCli, Errors) {
  test::TempDir dir("tok-cli-err");
  std::string out;
  auto bad = dir.path() / "bad.txt";
  write_file(bad, std::string("ok\xC3(", 4));
  EXPECT_EQ(test::run_command(
                test::dsv4_binary() + " tokenize -m " + tok_dir() + " - < " + bad.string(), &out),
            1);
  EXPECT_NE(out.find("byte offset 2"), std::string::npos) << out;
  EXPECT_EQ(
      test::run_command(test::dsv4_binary() + " tokenize -m " + dir.path().string() + " hi", &out),
      1);
  EXPECT_NE(out.find("tokenizer.json"), std::string::npos) << out;
  auto msgs = dir.path() / "m.json";
  write_file(msgs, R"([{"role": "robot", "content": "x"}])");
  EXPECT_EQ(
      test::run_command(
          test::dsv4_binary() + " render -m " + tok_dir() + " --messages " + msgs.string(), &out),
      1);
  EXPECT_NE(out.find("unknown role"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(test::dsv4_binary() + " detokenize -m " + tok_dir() + " 12x", &out),
            1);
  EXPECT_EQ(
      test::run_command(test::dsv4_binary() + " detokenize -m " + tok_dir() + " 99999999", &out),
      1);
  EXPECT_NE(out.find("unknown token id"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsv4
