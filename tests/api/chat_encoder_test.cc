#include "api/chat_encoder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4::api {
namespace {

const tok::Tokenizer& v4() {
  static const tok::Tokenizer t = tok::Tokenizer::load(test::shared_dir() / "tokenizer");
  return t;
}

std::vector<ojson> golden_chat() {
  std::ifstream f(test::shared_dir() / "tokenizer" / "golden_chat.jsonl");
  std::vector<ojson> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(ojson::parse(line));
  return out;
}

ChatOptions options_of(const ojson& args) {
  ChatOptions o;
  o.thinking = args.value("thinking_mode", std::string("chat")) == "thinking";
  o.drop_thinking = args.value("drop_thinking", true);
  o.add_bos = args.value("add_default_bos_token", true);
  if (args.contains("reasoning_effort") && args["reasoning_effort"].is_string())
    o.reasoning_effort = parse_reasoning_effort(args["reasoning_effort"].get<std::string>());
  return o;
}

TEST(ChatEncoder, GoldenChatAll23PromptsAndIds) {
  auto cases = golden_chat();
  ASSERT_EQ(cases.size(), 23u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    ChatOptions o = options_of(c["encode_args"]);
    std::string prompt = render_chat(c["messages"], o);
    EXPECT_EQ(prompt, c["prompt"].get<std::string>());
    EXPECT_EQ(encode_chat(v4(), c["messages"], o), c["ids"].get<std::vector<int32_t>>());
  }
}

TEST(ChatEncoder, GoldenApiCountsViaEncoder) {
  std::ifstream f(test::shared_dir() / "tokenizer" / "golden_api_counts.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    auto c = ojson::parse(line);
    ChatOptions o = options_of(c["encode_args"]);
    std::string prompt = render_chat(c["messages"], o);
    EXPECT_EQ(prompt, c["prompt"].get<std::string>()) << c["name"];
    EXPECT_EQ(v4().encode(prompt).size(), c["api_prompt_tokens"].get<size_t>()) << c["name"];
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(ChatEncoder, PythonJsonDumps) {
  EXPECT_EQ(python_json_dumps(ojson::parse(R"({"b": 1, "a": [true, null, 1.5, "x\"y\n"]})")),
            R"({"b": 1, "a": [true, null, 1.5, "x\"y\n"]})");
  EXPECT_EQ(python_json_dumps(ojson::parse(R"({})")), "{}");
  EXPECT_EQ(python_json_dumps(ojson::parse(R"([])")), "[]");
  EXPECT_EQ(python_json_dumps(ojson("北京 é \x01\x7f")), "\"北京 é \\u0001\x7f\"");
  EXPECT_EQ(python_json_dumps(ojson(1.0)), "1.0");
  EXPECT_EQ(python_json_dumps(ojson(-0.0)), "-0.0");
  EXPECT_EQ(python_json_dumps(ojson(1e16)), "1e+16");
  EXPECT_EQ(python_json_dumps(ojson(1234567890123456.0)), "1234567890123456.0");
  EXPECT_EQ(python_json_dumps(ojson(1e-5)), "1e-05");
  EXPECT_EQ(python_json_dumps(ojson(0.0001)), "0.0001");
  EXPECT_EQ(python_json_dumps(ojson(0.1)), "0.1");
  EXPECT_EQ(python_json_dumps(ojson(123.456)), "123.456");
  EXPECT_EQ(python_json_dumps(ojson(1.5e-7)), "1.5e-07");
  EXPECT_EQ(python_json_dumps(ojson(1.2345678901234568e+17)), "1.2345678901234568e+17");
  EXPECT_EQ(python_json_dumps(ojson(-42)), "-42");
}

TEST(ChatEncoder, RequestLevelToolsAttachToSystem) {
  ojson tools = ojson::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  ChatOptions o;
  o.tools = tools;
  ojson msgs = ojson::parse(R"([{"role": "user", "content": "hi"}])");
  ojson with =
      ojson::parse(R"([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}])");
  with[0]["tools"] = tools;
  EXPECT_EQ(render_chat(msgs, o), render_chat(with, ChatOptions{}));
  ojson sys =
      ojson::parse(R"([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])");
  std::string p = render_chat(sys, o);
  EXPECT_EQ(p.rfind("<｜begin▁of▁sentence｜>S\n\n## Tools\n\n", 0), 0u) << p;
}

std::string error_of(const ojson& msgs, ChatOptions o = {}) {
  try {
    render_chat(msgs, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(ChatEncoder, Errors) {
  EXPECT_NE(error_of(ojson::parse(R"({"role": "user"})")).find("must be a JSON list"),
            std::string::npos);
  EXPECT_NE(error_of(ojson::parse(R"("hello")")).find("must be a JSON list"), std::string::npos);
  std::string e = error_of(
      ojson::parse(R"([{"role": "user", "content": "a"}, {"role": "bot", "content": "x"}])"));
  EXPECT_NE(e.find("messages[1].role: unknown role \"bot\""), std::string::npos) << e;
  e = error_of(ojson::parse(R"([{"content": "a"}])"));
  EXPECT_NE(e.find("messages[0].role"), std::string::npos) << e;
  e = error_of(ojson::parse(R"([1])"));
  EXPECT_NE(e.find("messages[0]: message is not a JSON object"), std::string::npos) << e;
  e = error_of(ojson::parse(R"([
    {"role": "user", "content": "w?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_9", "content": "r"}])"));
  EXPECT_NE(e.find("messages[2].tool_call_id: \"call_9\" matches no tool call"), std::string::npos)
      << e;
  e = error_of(ojson::parse(
      R"([{"role": "user", "content": "w?"}, {"role": "tool", "tool_call_id": "x", "content": "r"}])"));
  EXPECT_NE(e.find("without a preceding assistant"), std::string::npos) << e;
  e = error_of(ojson::parse(R"([{"role": "developer", "content": ""}])"));
  EXPECT_NE(e.find("developer message needs content"), std::string::npos) << e;
  e = error_of(ojson::parse(R"([{"role": "user", "content": "a", "task": "dance"}])"));
  EXPECT_NE(e.find("unknown task"), std::string::npos) << e;
  // A field of the wrong type is named, not reported as the JSON library's type_error.
  e = error_of(ojson::parse(R"([{"role": "user", "content": [{"type": 5, "text": "a"}]}])"));
  EXPECT_NE(e.find("messages[0].content[0]: only text content parts"), std::string::npos) << e;
  e = error_of(ojson::parse(R"([
    {"role": "user", "content": "w?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": ["text"], "text": "r"}]}])"));
  EXPECT_NE(e.find(".content[0].type: not a string"), std::string::npos) << e;
  EXPECT_THROW(parse_reasoning_effort("extreme"), Error);
}

TEST(ChatEncoder, ToolCallArgumentsFallbacks) {
  // Unparseable arguments become one string parameter named "arguments" (official behaviour);
  // an object is used as is.
  ojson calls = ojson::parse(R"([
    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "not json"}},
    {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"x": [1, 2]}}}])");
  EXPECT_EQ(render_tool_calls(calls),
            "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter "
            "name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
            "<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"x\" string=\"false\">[1, "
            "2]</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
}

}  // namespace
}  // namespace dsv4::api
