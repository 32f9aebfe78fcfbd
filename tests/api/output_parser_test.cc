#include "api/output_parser.h"

#include <gtest/gtest.h>

#include <random>

#include "api/chat_encoder.h"
#include "tokenizer/utf8.h"

namespace dsv4::api {
namespace {

const std::string D = "｜DSML｜";
const std::string EOS = "<｜end▁of▁sentence｜>";

std::string param(const std::string& k, const std::string& v, bool str) {
  return "<" + D + "parameter name=\"" + k + "\" string=\"" + (str ? "true" : "false") + "\">" + v +
         "</" + D + "parameter>";
}
std::string invoke(const std::string& name, const std::vector<std::string>& params) {
  std::string s = "<" + D + "invoke name=\"" + name + "\">\n";
  for (size_t i = 0; i < params.size(); ++i) s += (i ? "\n" : "") + params[i];
  return s + "\n</" + D + "invoke>";
}
std::string block(const std::vector<std::string>& invokes) {
  std::string s = "\n\n<" + D + "tool_calls>\n";
  for (size_t i = 0; i < invokes.size(); ++i) s += (i ? "\n" : "") + invokes[i];
  return s + "\n</" + D + "tool_calls>";
}

struct Expected {
  std::string reasoning, content;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
  bool finished = true, malformed = false;
};

void expect_eq(const ParsedCompletion& got, const Expected& want, const std::string& ctx) {
  EXPECT_EQ(got.reasoning_content, want.reasoning) << ctx;
  EXPECT_EQ(got.content, want.content) << ctx;
  ASSERT_EQ(got.tool_calls.size(), want.calls.size()) << ctx;
  for (size_t i = 0; i < want.calls.size(); ++i) {
    EXPECT_EQ(got.tool_calls[i].name, want.calls[i].first) << ctx;
    EXPECT_EQ(got.tool_calls[i].arguments, want.calls[i].second) << ctx;
    EXPECT_EQ(got.tool_calls[i].id, "call_" + std::to_string(i)) << ctx;
  }
  EXPECT_EQ(got.finished, want.finished) << ctx;
  EXPECT_EQ(got.malformed, want.malformed) << ctx << " error=" << got.error;
}

// Feeds `pieces` and checks the invariants of the event stream against the final message.
ParsedCompletion run_stream(const std::vector<std::string>& pieces, bool thinking,
                            bool allow_markup_in_content) {
  OutputParserOptions o;
  o.thinking = thinking;
  OutputParser p(o);
  std::string content, reasoning;
  std::vector<OutputEvent> all;
  for (const auto& piece : pieces) {
    for (auto& e : p.push(piece)) all.push_back(std::move(e));
  }
  for (auto& e : p.finish()) all.push_back(std::move(e));
  size_t starts = 0;
  for (const auto& e : all) {
    if (e.type == OutputEvent::Type::kContentDelta) {
      content += e.text;
      if (!allow_markup_in_content) {
        EXPECT_EQ(e.text.find(D), std::string::npos) << "markup leaked: " << e.text;
        EXPECT_EQ(e.text.find("<｜end"), std::string::npos) << "EOS leaked: " << e.text;
      }
    } else if (e.type == OutputEvent::Type::kReasoningDelta) {
      reasoning += e.text;
    } else if (e.type == OutputEvent::Type::kToolCallStart) {
      EXPECT_EQ(e.tool_index, starts++);
    }
  }
  EXPECT_EQ(content, p.message().content);
  EXPECT_EQ(reasoning, p.message().reasoning_content);
  EXPECT_EQ(starts, p.message().tool_calls.size());
  return p.message();
}

// Whole text, then every two-piece split at every byte, then byte by byte: all must agree.
void check_all_splits(const std::string& text, bool thinking, const Expected& want,
                      bool markup_in_content = false) {
  expect_eq(parse_completion(text, thinking), want, "whole");
  for (size_t k = 0; k <= text.size(); ++k) {
    expect_eq(run_stream({text.substr(0, k), text.substr(k)}, thinking, markup_in_content), want,
              "split at byte " + std::to_string(k));
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  expect_eq(run_stream(bytes, thinking, markup_in_content), want, "byte by byte");
}

TEST(OutputParser, PlainContent) {
  check_all_splits("Hello, world!" + EOS, false, {"", "Hello, world!", {}, true, false});
  Expected cut{"", "no eos here", {}, false, false};
  check_all_splits("no eos here", false, cut);
}

TEST(OutputParser, ReasoningThenContent) {
  check_all_splits("Let me think.\nOK.</think>The answer is 4." + EOS, true,
                   {"Let me think.\nOK.", "The answer is 4.", {}, true, false});
}

TEST(OutputParser, SingleCallStringAndJsonParams) {
  std::string text = "Let me check." +
                     block({invoke("get_weather", {param("location", "Beijing", true),
                                                   param("days", "3", false)})}) +
                     EOS;
  check_all_splits(
      text, false,
      {"", "Let me check.", {{"get_weather", R"({"location": "Beijing", "days": 3})"}}});
}

TEST(OutputParser, ParallelCallsAfterReasoning) {
  std::string text =
      "Two cities, two calls.</think>" +
      block({invoke("get_weather", {param("location", "Paris", true)}),
             invoke("get_weather", {param("location", "東京", true)}),
             invoke("search",
                    {param("q", "x", true), param("opts", R"({"n": 2, "safe": true})", false),
                     param("tags", R"(["a", "b"])", false), param("x", "null", false)})}) +
      EOS;
  check_all_splits(
      text, true,
      {"Two cities, two calls.",
       "",
       {{"get_weather", R"({"location": "Paris"})"},
        {"get_weather", R"({"location": "東京"})"},
        {"search",
         R"({"q": "x", "opts": {"n": 2, "safe": true}, "tags": ["a", "b"], "x": null})"}}});
}

TEST(OutputParser, UnicodeAndEscapesInStringParams) {
  std::string v = "naïve \"quoted\" \\ back\nslash\t☀️ 😀";
  std::string text = block({invoke("write", {param("text", v, true)})}) + EOS;
  check_all_splits(
      text, false,
      {"", "", {{"write", R"({"text": "naïve \"quoted\" \\ back\nslash\t☀️ 😀"})"}}});
}

TEST(OutputParser, NoArgumentCall) {
  std::string text = block({invoke("now", {})}) + EOS;
  EXPECT_EQ(text.find("\">\n\n</" + D + "invoke>") != std::string::npos, true);
  check_all_splits(text, false, {"", "", {{"now", "{}"}}});
}

TEST(OutputParser, LookAlikeMarkupInCodeBlockStaysContent) {
  std::string content = "Example of the syntax:\n```\n<" + D + "invoke name=\"x\">\n<" + D +
                        "tool_calls>\n```\nDone. </think> too.";
  check_all_splits(content + EOS, false, {"", content, {}, true, false},
                   /*markup_in_content=*/true);
}

TEST(OutputParser, TruncatedBlocksComeBackAsContent) {
  std::string full = "Checking." + block({invoke("get_weather", {param("location", "Beijing", true),
                                                                 param("days", "3", false)})});
  // Cut anywhere inside the block: the whole block text is returned as flagged content.
  for (size_t cut = 9 + 1; cut < full.size(); ++cut) {
    std::string t = full.substr(0, cut);
    bool in_block = cut >= 9 + 2 + 1 + D.size();  // opener complete far enough to be a block
    ParsedCompletion p = parse_completion(t, false);
    EXPECT_EQ(p.content, t) << cut;
    EXPECT_TRUE(p.tool_calls.empty()) << cut;
    EXPECT_FALSE(p.finished);
    if (t.find("\n\n<" + D + "tool_calls") != std::string::npos) {
      EXPECT_TRUE(p.malformed) << cut;
      EXPECT_NE(p.error.find("truncated"), std::string::npos) << p.error;
    }
    (void)in_block;
  }
  // EOS inside the block.
  std::string t = "Checking." + block({invoke("f", {param("a", "1", false)})}).substr(0, 60) + EOS;
  ParsedCompletion p = parse_completion(t, false);
  EXPECT_EQ(p.content, t.substr(0, t.size() - EOS.size()));
  EXPECT_TRUE(p.malformed);
  EXPECT_TRUE(p.finished);
}

TEST(OutputParser, MalformedBlocksComeBackAsContent) {
  std::vector<std::string> bad = {
      block({invoke("f", {param("a", "not json", false)})}),
      block({invoke("f",
                    {"<" + D + "parameter name=\"a\" string=\"maybe\">1</" + D + "parameter>"})}),
      block({invoke("f", {param("a", "1", true), param("a", "2", true)})}),
      "\n\n<" + D + "tool_calls>" + invoke("f", {}) + "\n</" + D + "tool_calls>",  // no newline
      "\n\n<" + D + "tool_calls>\nhello\n</" + D + "tool_calls>",
  };
  for (const auto& b : bad) {
    std::string text = "Pre." + b + EOS;
    Expected want{"", "Pre." + b, {}, true, true};
    check_all_splits(text, false, want, /*markup_in_content=*/true);
  }
}

TEST(OutputParser, TextAfterToolCallsOrEosIsKeptAndFlagged) {
  std::string b = block({invoke("f", {param("a", "1", false)})});
  ParsedCompletion p = parse_completion("x" + b + "oops" + EOS, false);
  EXPECT_EQ(p.content, "xoops");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_TRUE(p.malformed);
  p = parse_completion("done" + EOS + "extra", false);
  EXPECT_EQ(p.content, "doneextra");
  EXPECT_TRUE(p.malformed);
  EXPECT_TRUE(p.finished);
}

// A forced tool-call block (tool_choice required / named): parsed with tool_call_forced.
ParsedCompletion parse_forced(const std::vector<std::string>& pieces, bool thinking = false) {
  OutputParserOptions o;
  o.thinking = thinking;
  o.tool_call_forced = true;
  OutputParser p(o);
  std::string content;
  size_t calls = 0;
  auto take = [&](const std::vector<OutputEvent>& evs) {
    for (const auto& e : evs) {
      if (e.type == OutputEvent::Type::kContentDelta) content += e.text;
      if (e.type == OutputEvent::Type::kToolCallStart) {
        EXPECT_EQ(e.tool_index, calls++);
      }
    }
  };
  for (const auto& piece : pieces) take(p.push(piece));
  take(p.finish());
  EXPECT_EQ(content, p.message().content);
  EXPECT_EQ(calls, p.message().tool_calls.size());
  return p.message();
}

std::vector<std::string> bytes_of(const std::string& text) {
  std::vector<std::string> out;
  for (char c : text) out.emplace_back(1, c);
  return out;
}

TEST(OutputParser, ForcedBlockCutAnywhereIsNeverContent) {
  const std::string pre = "Plan.</think>";
  const std::string opener = "\n\n<" + D + "tool_calls>\n<" + D + "invoke name=\"";
  const std::string named = opener + "get_weather\">\n";
  const std::string p1 = param("location", "Beijing", true), p2 = param("days", "3", false);
  const std::string first = named + p1 + "\n" + p2 + "\n</" + D + "invoke>";
  const std::string full = first + "\n" + invoke("now", {}) + "\n</" + D + "tool_calls>";
  for (size_t cut = opener.size(); cut <= full.size(); ++cut) {
    const std::string text = pre + full.substr(0, cut);
    const ParsedCompletion whole = parse_forced({text}, true);
    const ParsedCompletion streamed = parse_forced(bytes_of(text), true);
    const std::string at = "cut at " + std::to_string(cut);
    for (const ParsedCompletion* m : {&whole, &streamed}) {
      EXPECT_EQ(m->reasoning_content, "Plan.") << at;
      EXPECT_EQ(m->content, "") << at;
      EXPECT_FALSE(m->finished) << at;
      std::vector<std::pair<std::string, std::string>> want;
      if (cut >= named.size() + p1.size() + 1 + p2.size())
        want.emplace_back("get_weather", R"({"location": "Beijing", "days": 3})");
      else if (cut >= named.size() + p1.size())
        want.emplace_back("get_weather", R"({"location": "Beijing"})");
      else if (cut >= named.size())
        want.emplace_back("get_weather", "{}");
      if (cut >= first.size() + 1 + ("<" + D + "invoke name=\"now\">\n").size())
        want.emplace_back("now", "{}");
      ASSERT_EQ(m->tool_calls.size(), want.size()) << at;
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(m->tool_calls[i].name, want[i].first) << at;
        EXPECT_EQ(m->tool_calls[i].arguments, want[i].second) << at;
        EXPECT_FALSE(ojson::parse(m->tool_calls[i].arguments).is_discarded());
      }
      EXPECT_EQ(m->tool_calls_incomplete, cut < full.size()) << at;
      EXPECT_FALSE(m->malformed) << at;
    }
  }
  // Complete: exactly as without the option.
  const ParsedCompletion done = parse_forced({full + EOS});
  EXPECT_FALSE(done.tool_calls_incomplete);
  EXPECT_TRUE(done.finished);
  EXPECT_EQ(done.tool_calls.size(), 2u);
  EXPECT_TRUE(done.error.empty()) << done.error;
}

TEST(OutputParser, ForcedBlockBrokenByGarbageKeepsTheNamedCallAndDropsTheRest) {
  const std::string named = "\n\n<" + D + "tool_calls>\n<" + D + "invoke name=\"f\">\n";
  for (const std::string& tail :
       {std::string("some gibberish <" + D + "x> and more"), param("a", "1", false) + "\noops",
        param("a", "not json", false)}) {
    const std::string text = named + tail + EOS;
    for (const auto& pieces : {std::vector<std::string>{text}, bytes_of(text)}) {
      const ParsedCompletion m = parse_forced(pieces);
      EXPECT_EQ(m.content, "") << tail;
      ASSERT_EQ(m.tool_calls.size(), 1u) << tail;
      EXPECT_EQ(m.tool_calls[0].name, "f");
      EXPECT_EQ(m.tool_calls[0].arguments, tail.rfind("<" + D + "parameter", 0) == 0 &&
                                                   tail.find("not json") == std::string::npos
                                               ? R"({"a": 1})"
                                               : "{}");
      EXPECT_TRUE(m.tool_calls_incomplete);
      EXPECT_TRUE(m.finished);
      EXPECT_NE(m.error.find("malformed DSML"), std::string::npos) << m.error;
    }
  }
  // A name that breaks the grammar names nothing.
  const ParsedCompletion m =
      parse_forced({"\n\n<" + D + "tool_calls>\n<" + D + "invoke name=\"x\ny\">\n" + EOS});
  EXPECT_EQ(m.content, "");
  EXPECT_TRUE(m.tool_calls.empty());
  EXPECT_TRUE(m.tool_calls_incomplete);
}

// What settled() and tool_call_spans() say after each piece of `pieces`, checked against what
// the events released; returns the spans at the end.
std::vector<std::pair<size_t, size_t>> spans_of(const std::vector<std::string>& pieces,
                                                bool forced) {
  OutputParserOptions o;
  o.tool_call_forced = forced;
  OutputParser p(o);
  size_t pushed = 0, released = 0;
  for (const std::string& piece : pieces) {
    for (const auto& e : p.push(piece))
      if (e.type == OutputEvent::Type::kContentDelta) released += e.text.size();
    pushed += piece.size();
    EXPECT_LE(p.settled(), pushed);
    // Settled bytes are released text or markup: never less than the text released.
    EXPECT_GE(p.settled(), released);
  }
  p.finish();
  EXPECT_EQ(p.settled(), pushed);
  return p.tool_call_spans();
}

TEST(OutputParser, ReportsWhereToolCallsSit) {
  using Spans = std::vector<std::pair<size_t, size_t>>;
  const std::string pre = "Let me check.";
  const std::string b = block({invoke("f", {param("a", "1", false)})});
  const std::string text = pre + b + EOS;
  for (const auto& pieces : {std::vector<std::string>{text}, bytes_of(text)}) {
    EXPECT_EQ(spans_of(pieces, false), (Spans{{pre.size(), pre.size() + b.size()}}));
    EXPECT_EQ(spans_of(pieces, true), (Spans{{pre.size(), pre.size() + b.size()}}));
  }
  // Two blocks (the text between them is content, flagged).
  const std::string two = b + "x" + b;
  EXPECT_EQ(spans_of(bytes_of(two), false),
            (Spans{{0, b.size()}, {b.size() + 1, 2 * b.size() + 1}}));
  // A block that breaks the grammar: content unless forced, then a call to the end.
  const std::string broken = "\n\n<" + D + "tool_calls>\n<" + D + "invoke name=\"f\">\noops";
  for (const auto& pieces : {std::vector<std::string>{broken}, bytes_of(broken)}) {
    EXPECT_EQ(spans_of(pieces, false), Spans{});
    EXPECT_EQ(spans_of(pieces, true), (Spans{{0, std::string::npos}}));
  }
  // What may still become markup is not settled.
  OutputParser p;
  p.push("Hi.\n\n<" + D);
  EXPECT_EQ(p.settled(), 3u);
  p.push("tool_calls>\n<" + D + "invoke name=\"f\">\n");
  EXPECT_EQ(p.settled(), 3u);
  EXPECT_TRUE(p.tool_call_spans().empty());
}

TEST(OutputParser, RoundTripThroughChatEncoder) {
  ojson user = ojson::parse(R"([{"role": "user", "content": "q"}])");
  std::vector<std::pair<std::string, bool>> texts = {
      {"Plain answer." + EOS, false},
      {"Thinking hard.</think>Answer." + EOS, true},
      {"Checking." +
           block({invoke("get_weather",
                         {param("location", "Beijing", true), param("days", "3", false)})}) +
           EOS,
       false},
      {"Plan.</think>" +
           block({invoke("a", {param("x", R"({"k": [1, 2.5, "s"]})", false)}), invoke("b", {}),
                  invoke("c", {param("t", "多\n行", true)})}) +
           EOS,
       true},
  };
  for (const auto& [text, thinking] : texts) {
    ParsedCompletion p = parse_completion(text, thinking);
    ASSERT_FALSE(p.malformed) << text << " " << p.error;
    ChatOptions o;
    o.thinking = thinking;
    std::string prefix = render_chat(user, o);
    ojson conv = user;
    conv.push_back(p.to_openai_message(thinking));
    EXPECT_EQ(render_chat(conv, o), prefix + text);
  }
}

TEST(OutputParser, CustomIdsAndOpenAiShape) {
  OutputParserOptions o;
  o.make_tool_call_id = [](size_t i) { return "call_abc" + std::to_string(i); };
  OutputParser p(o);
  auto ev = p.push(block({invoke("f", {param("a", "1", false)})}) + EOS);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, OutputEvent::Type::kToolCallStart);
  EXPECT_EQ(ev[0].tool_id, "call_abc0");
  EXPECT_EQ(ev[0].tool_name, "f");
  EXPECT_EQ(ev[1].type, OutputEvent::Type::kToolCallArguments);
  EXPECT_EQ(ev[1].text, R"({"a": 1})");
  p.finish();
  EXPECT_EQ(
      p.message().to_openai_message(false).dump(),
      R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_abc0","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]})");
}

TEST(OutputParser, HoldsBackOnlyPossibleMarkup) {
  OutputParser p;
  auto ev = p.push("abc\n");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "abc");  // "\n" could start "\n\n<｜DSML｜tool_calls"
  ev = p.push("x<");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "\nx");  // "<" could start the EOS marker
  ev = p.push("b>");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "<b>");
}

TEST(OutputParser, RandomGarbageNeverThrowsAndLosesNothing) {
  std::mt19937 rng(7);
  std::vector<std::string> atoms = {"a",      "\n",       "\n\n",      "<",
                                    ">",      "\"",       D,           "tool_calls",
                                    "invoke", " name=\"", "parameter", "string=\"true\">",
                                    "</",     EOS,        "</think>",  "é",
                                    "\xE4",   "{",        "1"};
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    int n = rng() % 40;
    for (int i = 0; i < n; ++i) text += atoms[rng() % atoms.size()];
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      size_t len = 1 + rng() % 5;
      pieces.push_back(text.substr(i, len));
      i += len;
    }
    ParsedCompletion p = run_stream(pieces, iter % 2, true);
    ParsedCompletion q = parse_completion(text, iter % 2);
    EXPECT_EQ(p.content, q.content);
    EXPECT_EQ(p.tool_calls.size(), q.tool_calls.size());
  }
}

}  // namespace
}  // namespace dsv4::api
