// End-to-end tests of `dsv4 serve`: a real server process on 127.0.0.1 (free port) over a synth
// tiny checkpoint with the real V4 tokenizer, spoken to with cpp-httplib's client.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "api/chat_encoder.h"
#include "api/output_parser.h"
#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "server_proc.h"
#include "synth_tiny.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

using json = nlohmann::ordered_json;
using test::ServerProc;
using test::shared_dir;

constexpr const char* kKey = "test-key-123";
constexpr int kCtx = 1024;

// ---- HTTP helpers
// ---------------------------------------------------------------------------------

struct Reply {
  int status = 0;
  std::string body;
  httplib::Headers headers;
  json j() const { return json::parse(body); }
};

httplib::Headers auth_headers(const std::string& key = kKey) {
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  return h;
}

Reply post(int port, const std::string& path, const std::string& body,
           const std::string& key = kKey) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(120, 0);
  auto r = cli.Post(path.c_str(), auth_headers(key), body, "application/json");
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  return out;
}
Reply post(int port, const std::string& path, const json& body, const std::string& key = kKey) {
  return post(port, path, body.dump(), key);
}
Reply get(int port, const std::string& path, const std::string& key = kKey) {
  httplib::Client cli("127.0.0.1", port);
  auto r = cli.Get(path.c_str(), auth_headers(key));
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  return out;
}

// Streams a POST; `on_data` sees each piece and may return false to hang up.
Reply post_stream(int port, const std::string& path, const json& body,
                  std::function<bool(const std::string& so_far)> on_data = {}) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(120, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = auth_headers();
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  Reply out;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    out.body.append(d, n);
    return on_data ? on_data(out.body) : true;
  };
  httplib::Response res;
  httplib::Error err;
  cli.send(req, res, err);
  out.status = res.status;
  out.headers = res.headers;
  return out;
}

// A chat completion with "stream" set as asked, posted the matching way.
Reply post_chat(int port, json body, bool stream) {
  body["stream"] = stream;
  return stream ? post_stream(port, "/v1/chat/completions", body)
                : post(port, "/v1/chat/completions", body);
}

struct SseEvent {
  std::string event;
  std::string data;
};

std::vector<SseEvent> parse_sse(const std::string& raw) {
  std::vector<SseEvent> out;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t end = raw.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string block = raw.substr(pos, end - pos);
    pos = end + 2;
    SseEvent ev;
    std::istringstream in(block);
    std::string line;
    bool any = false;
    while (std::getline(in, line)) {
      if (line.rfind("event: ", 0) == 0)
        ev.event = line.substr(7), any = true;
      else if (line.rfind("data: ", 0) == 0)
        ev.data += line.substr(6), any = true;
    }
    if (any) out.push_back(ev);
  }
  return out;
}

double metric(int port, const std::string& name) {
  Reply r = get(port, "/metrics");
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

void expect_openai_error(const Reply& r, int status, const std::string& needle = "") {
  EXPECT_EQ(r.status, status) << r.body;
  json j;
  ASSERT_NO_THROW(j = json::parse(r.body)) << r.body;
  ASSERT_TRUE(j.contains("error")) << r.body;
  const json& e = j["error"];
  EXPECT_TRUE(e["message"].is_string());
  EXPECT_FALSE(e["message"].get<std::string>().empty());
  EXPECT_TRUE(e["type"].is_string());
  EXPECT_TRUE(e.contains("param"));
  EXPECT_TRUE(e.contains("code"));
  if (!needle.empty()) {
    EXPECT_NE(e["message"].get<std::string>().find(needle), std::string::npos) << r.body;
  }
}

// ---- Fixture: one model dir, one server, one in-process reference
// --------------------------------

const char* kToolDsml =
    "Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"location\" string=\"true\">Beijing, \"China\"</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"get_time\">\n<｜DSML｜parameter name=\"tz\" "
    "string=\"true\">UTC+8</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";

json weather_tools() {
  return json::parse(
      R"([{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"location":{"type":"string"},"days":{"type":"integer"}}}}},
    {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"tz":{"type":"string"}}}}}])");
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProc();
    server_->start({"-m", model_dir().string(), "--port", "0", "-np", "4", "-c",
                    std::to_string(kCtx), "-t", "2", "--api-key", kKey, "--test-hooks", "--timeout",
                    "120", "--max-body", "1000000", "--alias", "tiny-test"});
  }
  static void TearDownTestSuite() {
    if (server_) server_->stop();
    delete server_;
    server_ = nullptr;
    delete ref_model_;
    ref_model_ = nullptr;
    delete ref_tok_;
    ref_tok_ = nullptr;
  }
  static int port() { return server_->port; }

  static void load_ref() {
    if (ref_model_) return;
    ref_tok_ = new tok::Tokenizer(tok::Tokenizer::load(model_dir()));
    ref_model_ = Model::load(model_dir().string()).release();
  }
  // Greedy text of the generator on `ids` (what `dsv4 run --temp 0` prints).
  static std::string ref_text(const std::vector<int32_t>& ids, int max_tokens, bool skip_special) {
    load_ref();
    ThreadPool pool(2);
    SequenceState seq = ref_model_->new_sequence();
    SamplingParams sp;
    sp.temperature = 0;
    Sampler s(sp, ref_model_->config().vocab_size);
    GenerationParams gp;
    gp.max_tokens = max_tokens;
    gp.n_ctx = kCtx;
    gp.skip_special = skip_special;
    return generate(*ref_model_, pool, ref_tok_, seq, ids, s, gp).text;
  }
  static std::string ref_chat(const json& messages, int max_tokens) {
    load_ref();
    auto ids = api::encode_chat(*ref_tok_, messages, {});
    return api::parse_completion(ref_text(ids, max_tokens, false), false).content;
  }

  static const std::filesystem::path& model_dir() { return test::synth_tiny(); }
  static ServerProc* server_;
  static Model* ref_model_;
  static tok::Tokenizer* ref_tok_;
};
ServerProc* ServerTest::server_ = nullptr;
Model* ServerTest::ref_model_ = nullptr;
tok::Tokenizer* ServerTest::ref_tok_ = nullptr;

json chat_body(const std::string& user, int max_tokens, bool stream = false) {
  json b;
  b["model"] = "tiny-test";
  b["messages"] = json::array({{{"role", "user"}, {"content", user}}});
  b["max_tokens"] = max_tokens;
  b["temperature"] = 0;
  if (stream) b["stream"] = true;
  return b;
}

// Collects an OpenAI chat stream into content / reasoning / tool calls, checking every chunk.
struct ChatStream {
  std::string content, reasoning, finish, id;
  json tool_calls = json::array();
  json usage;
  bool done = false;
  int chunks = 0;
};

ChatStream collect_chat_stream(const std::string& raw) {
  ChatStream cs;
  auto events = parse_sse(raw);
  EXPECT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) {
    const std::string& d = events[i].data;
    if (d == "[DONE]") {
      EXPECT_EQ(i + 1, events.size()) << "[DONE] must be last";
      cs.done = true;
      continue;
    }
    json c = json::parse(d);  // every chunk is JSON
    ++cs.chunks;
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_TRUE(c["created"].is_number_integer());
    EXPECT_EQ(c["model"], "tiny-test");
    if (cs.id.empty()) cs.id = c["id"];
    EXPECT_EQ(c["id"], cs.id);
    if (c.contains("usage") && !c["usage"].is_null()) cs.usage = c["usage"];
    if (c["choices"].empty()) continue;
    const json& ch = c["choices"][0];
    EXPECT_EQ(ch["index"], 0);
    const json& delta = ch["delta"];
    if (i == 0) {
      EXPECT_EQ(delta["role"], "assistant");
    }
    if (delta.contains("content") && delta["content"].is_string())
      cs.content += delta["content"].get<std::string>();
    if (delta.contains("reasoning_content"))
      cs.reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("tool_calls")) {
      for (const auto& tc : delta["tool_calls"]) {
        size_t idx = tc["index"];
        while (cs.tool_calls.size() <= idx)
          cs.tool_calls.push_back({{"id", ""}, {"name", ""}, {"arguments", ""}});
        if (tc.contains("id")) cs.tool_calls[idx]["id"] = tc["id"];
        if (tc.contains("function")) {
          if (tc["function"].contains("name")) cs.tool_calls[idx]["name"] = tc["function"]["name"];
          if (tc["function"].contains("arguments"))
            cs.tool_calls[idx]["arguments"] = cs.tool_calls[idx]["arguments"].get<std::string>() +
                                              tc["function"]["arguments"].get<std::string>();
        }
      }
    }
    if (!ch["finish_reason"].is_null()) cs.finish = ch["finish_reason"];
  }
  return cs;
}

// ---- Tests --------------------------------------------------------------------------------------

TEST_F(ServerTest, HealthAndModels) {
  Reply h = get(port(), "/health", "");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.j()["status"], "ok");
  Reply m = get(port(), "/v1/models");
  ASSERT_EQ(m.status, 200);
  json j = m.j();
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "tiny-test");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(get(port(), "/v1/models/tiny-test").status, 200);
  expect_openai_error(get(port(), "/v1/models/nope"), 404);
  expect_openai_error(get(port(), "/v1/nothing"), 404);
}

TEST_F(ServerTest, ChatGreedyMatchesGeneratorStreamAndNot) {
  const int n = 12;
  json body = chat_body("Hello there", n);
  Reply r = post(port(), "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.j();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], "tiny-test");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& ch = j["choices"][0];
  EXPECT_EQ(ch["index"], 0);
  EXPECT_EQ(ch["message"]["role"], "assistant");
  EXPECT_TRUE(ch["message"]["content"].is_string());
  EXPECT_TRUE(ch["logprobs"].is_null());
  EXPECT_EQ(ch["finish_reason"], "length");
  EXPECT_FALSE(ch["message"].contains("tool_calls"));
  const json& u = j["usage"];
  EXPECT_EQ(u["completion_tokens"], n);
  EXPECT_EQ(u["total_tokens"].get<int>(), u["prompt_tokens"].get<int>() + n);
  const std::string expected = ref_chat(body["messages"], n);
  EXPECT_EQ(ch["message"]["content"], expected);
  // …and what `dsv4 run` prints for the same prompt (one trailing newline added by the CLI).
  std::string cli_out;
  const int rc = test::run_command("( " + test::dsv4_binary() + " run -m " + model_dir().string() +
                                       " -p 'Hello there' --temp 0 -n " + std::to_string(n) +
                                       " -c " + std::to_string(kCtx) + " -t 2 2>/dev/null )",
                                   &cli_out);
  EXPECT_EQ(rc, 0) << cli_out;
  if (!cli_out.empty() && cli_out.back() == '\n') cli_out.pop_back();
  EXPECT_EQ(ch["message"]["content"], cli_out);

  json sb = body;
  sb["stream"] = true;
  sb["stream_options"] = {{"include_usage", true}};
  Reply s = post_stream(port(), "/v1/chat/completions", sb);
  ASSERT_EQ(s.status, 200);
  ChatStream cs = collect_chat_stream(s.body);
  EXPECT_TRUE(cs.done);
  EXPECT_EQ(cs.content, expected);
  EXPECT_EQ(cs.finish, "length");
  EXPECT_EQ(cs.usage["completion_tokens"], n);
  EXPECT_EQ(cs.usage["prompt_tokens"], u["prompt_tokens"]);
}

TEST_F(ServerTest, ConcurrentRequestsBatchAndMatchSingleResults) {
  // 8 different prompts at once on 4 slots: batched decode, queueing, interleaved prefill.
  std::vector<std::string> prompts;
  for (int i = 0; i < 8; ++i)
    prompts.push_back("Question number " + std::to_string(i) + std::string(i * 7, 'x'));
  std::vector<std::string> got(prompts.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < prompts.size(); ++i) {
    th.emplace_back([&, i] {
      Reply s =
          post_stream(port(), "/v1/chat/completions", chat_body(prompts[i], 10 + (int)i, true));
      got[i] = collect_chat_stream(s.body).content;
    });
  }
  for (auto& t : th) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got[i], ref_chat(chat_body(prompts[i], 1)["messages"], 10 + (int)i))
        << "prompt " << i;
  }
  EXPECT_GT(metric(port(), "dsv4_batch_sequences_total"), metric(port(), "dsv4_batch_steps_total"))
      << "requests never shared a forward step";
}

TEST_F(ServerTest, ToolCallsFromDsmlNeverLeakMarkup) {
  json body = chat_body("Weather in Beijing?", 200);
  body["tools"] = weather_tools();
  body["dsv4_force_output"] = kToolDsml;
  Reply r = post(port(), "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("｜DSML｜"), std::string::npos);
  EXPECT_EQ(r.body.find("DSML"), std::string::npos);
  json m = r.j()["choices"][0]["message"];
  EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(m["content"], "Let me check.");
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"],
            R"({"location": "Beijing, \"China\"", "days": 3})");
  EXPECT_EQ(m["tool_calls"][1]["function"]["name"], "get_time");
  EXPECT_EQ(m["tool_calls"][1]["function"]["arguments"], R"({"tz": "UTC+8"})");
  EXPECT_NE(m["tool_calls"][0]["id"], m["tool_calls"][1]["id"]);

  body["stream"] = true;
  Reply s = post_stream(port(), "/v1/chat/completions", body);
  EXPECT_EQ(s.body.find("DSML"), std::string::npos);
  ChatStream cs = collect_chat_stream(s.body);
  EXPECT_EQ(cs.content, "Let me check.");
  EXPECT_EQ(cs.finish, "tool_calls");
  ASSERT_EQ(cs.tool_calls.size(), 2u);
  EXPECT_EQ(cs.tool_calls[0]["name"], "get_weather");
  EXPECT_EQ(cs.tool_calls[0]["arguments"], R"({"location": "Beijing, \"China\"", "days": 3})");
  EXPECT_EQ(cs.tool_calls[1]["arguments"], R"({"tz": "UTC+8"})");
  EXPECT_FALSE(cs.tool_calls[0]["id"].get<std::string>().empty());
}

TEST_F(ServerTest, ReasoningIsSeparated) {
  json body = chat_body("Think first", 100);
  body["chat_template_kwargs"] = {{"thinking", true}};
  body["dsv4_force_output"] = "Some reasoning here.</think>The answer.<｜end▁of▁sentence｜>";
  Reply r = post(port(), "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json m = r.j()["choices"][0]["message"];
  EXPECT_EQ(m["reasoning_content"], "Some reasoning here.");
  EXPECT_EQ(m["content"], "The answer.");
  EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "stop");
  body["stream"] = true;
  ChatStream cs = collect_chat_stream(post_stream(port(), "/v1/chat/completions", body).body);
  EXPECT_EQ(cs.reasoning, "Some reasoning here.");
  EXPECT_EQ(cs.content, "The answer.");
  // reasoning_effort / thinking:{type} switch the prompt to thinking mode too.
  json b2 = chat_body("x", 1);
  b2["thinking"] = {{"type", "enabled"}};
  b2["dsv4_return_prompt"] = true;
  Reply r2 = post(port(), "/v1/chat/completions", b2);
  ASSERT_EQ(r2.status, 200);
  EXPECT_EQ(r2.j()["dsv4_prompt_ids"].back(), 128821);  // <think>
  b2.erase("thinking");
  Reply r3 = post(port(), "/v1/chat/completions", b2);
  EXPECT_EQ(r3.j()["dsv4_prompt_ids"].back(), 128822);  // </think>
}

TEST_F(ServerTest, ToolResultFollowUpRendersLikeEncoderGolden) {
  std::ifstream in(shared_dir() / "tokenizer" / "golden_chat.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    json g = json::parse(line);
    const std::string name = g["name"];
    if (name != "thinking_tool_call_and_result" &&
        name != "chat_parallel_tool_calls_results_reordered")
      continue;
    json msgs = g["messages"];
    json body;
    // An API client sends the tools at the request level, not on the system message.
    if (msgs[0].contains("tools")) {
      body["tools"] = msgs[0]["tools"];
      msgs[0].erase("tools");
    }
    body["messages"] = msgs;
    body["max_tokens"] = 1;
    body["dsv4_return_prompt"] = true;
    if (g["encode_args"]["thinking_mode"] == "thinking") body["thinking"] = {{"type", "enabled"}};
    Reply r = post(port(), "/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200) << name << ": " << r.body;
    EXPECT_EQ(r.j()["dsv4_prompt_ids"], g["ids"]) << name;
    EXPECT_EQ(r.j()["usage"]["prompt_tokens"], g["ids"].size()) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST_F(ServerTest, BadRequestsGetOpenAIErrors) {
  const std::string p = "/v1/chat/completions";
  expect_openai_error(post(port(), p, std::string("{not json")), 400, "JSON");
  expect_openai_error(post(port(), p, std::string("[1,2]")), 400);
  expect_openai_error(post(port(), p, std::string("")), 400);
  json b = chat_body("hi", 4);
  b["temperature"] = "hot";
  expect_openai_error(post(port(), p, b), 400, "temperature");
  b = chat_body("hi", 4);
  b["messages"][0]["role"] = "wizard";
  expect_openai_error(post(port(), p, b), 400, "wizard");
  b = chat_body("hi", 4);
  b["n"] = 2;
  expect_openai_error(post(port(), p, b), 400, "'n'");
  b = chat_body("hi", -5);
  expect_openai_error(post(port(), p, b), 400, "max_tokens");
  b = chat_body("hi", 4);
  b["messages"] = "hello";
  expect_openai_error(post(port(), p, b), 400, "messages");
  b = chat_body("hi", 4);
  b.erase("messages");
  expect_openai_error(post(port(), p, b), 400, "messages");
  b = chat_body("hi", 4);
  b["messages"][0]["content"] = 42;
  expect_openai_error(post(port(), p, b), 400);
  b = chat_body("hi", 4);
  b["stop"] = json::array({1, 2});
  expect_openai_error(post(port(), p, b), 400, "stop");
  b = chat_body("hi", 4);
  b["tool_choice"] = {{"type", "function"}, {"function", {{"name", "nope"}}}};
  b["tools"] = weather_tools();
  expect_openai_error(post(port(), p, b), 400, "nope");
  b = chat_body("hi", 4);
  b["messages"] = json::array({{{"role", "tool"}, {"tool_call_id", "zz"}, {"content", "x"}}});
  expect_openai_error(post(port(), p, b), 400);
  // Oversized body → 413 (limit 1,000,000 bytes).
  b = chat_body(std::string(1200000, 'a'), 4);
  expect_openai_error(post(port(), p, b), 413);
  // Prompt longer than the context → 400 naming the limit.
  std::string longp;
  for (int i = 0; i < 1100; ++i) longp += " word" + std::to_string(i);
  expect_openai_error(post(port(), p, chat_body(longp, 4)), 400, std::to_string(kCtx));
  // Auth.
  expect_openai_error(post(port(), p, chat_body("hi", 2), ""), 401);
  expect_openai_error(post(port(), p, chat_body("hi", 2), "wrong"), 401);
  EXPECT_EQ(get(port(), "/health", "").status, 200);  // health needs no key
  // Still serving.
  EXPECT_EQ(post(port(), p, chat_body("hi", 2)).status, 200);
}

TEST_F(ServerTest, LogprobsAndStop) {
  json b = chat_body("Hello", 5);
  b["logprobs"] = true;
  b["top_logprobs"] = 3;
  Reply r = post(port(), "/v1/chat/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = r.j()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 5u);
  for (const auto& e : lp) {
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    // greedy: the chosen token is the top one
    EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);
    EXPECT_NEAR(e["top_logprobs"][0]["logprob"].get<double>(), e["logprob"].get<double>(), 1e-5);
  }
  // stop string: output cut before it
  json full = post(port(), "/v1/chat/completions", chat_body("Hello", 8)).j();
  std::string text = full["choices"][0]["message"]["content"];
  ASSERT_GE(text.size(), 4u);
  json sb = chat_body("Hello", 8);
  const std::string stop = text.substr(2, 2);
  sb["stop"] = stop;
  json cut = post(port(), "/v1/chat/completions", sb).j();
  EXPECT_EQ(cut["choices"][0]["message"]["content"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, CompletionsEndpoint) {
  json b = {{"prompt", "The capital of France is"}, {"max_tokens", 9}, {"temperature", 0}};
  Reply r = post(port(), "/v1/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.j();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 9);
  load_ref();
  const std::string expected = ref_text(ref_tok_->encode("The capital of France is"), 9, true);
  EXPECT_EQ(j["choices"][0]["text"], expected);
  b["stream"] = true;
  Reply s = post_stream(port(), "/v1/completions", b);
  std::string text, finish;
  bool done = false;
  for (const auto& e : parse_sse(s.body)) {
    if (e.data == "[DONE]") {
      done = true;
      continue;
    }
    json c = json::parse(e.data);
    EXPECT_EQ(c["object"], "text_completion");
    text += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish = c["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(text, expected);
  EXPECT_EQ(finish, "length");
  // token-id prompt
  json ib = {{"prompt", ref_tok_->encode("The capital of France is")},
             {"max_tokens", 9},
             {"temperature", 0}};
  EXPECT_EQ(post(port(), "/v1/completions", ib).j()["choices"][0]["text"], expected);
  expect_openai_error(post(port(), "/v1/completions", json{{"prompt", 5.5}}), 400, "prompt");
}

TEST_F(ServerTest, AnthropicMessages) {
  json b;
  b["model"] = "claude-ish";
  b["max_tokens"] = 200;
  b["system"] = "You are helpful.";
  b["thinking"] = {{"type", "enabled"}, {"budget_tokens", 1000}};
  b["tools"] = json::parse(
      R"([{"name":"get_weather","description":"w","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}},
                               {"name":"get_time","input_schema":{"type":"object"}}])");
  b["messages"] = json::array(
      {{{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Weather?"}}})}}});
  b["dsv4_force_output"] = std::string("Hmm.</think>") + kToolDsml;
  Reply r = post(port(), "/v1/messages", b);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos);
  json j = r.j();
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["role"], "assistant");
  EXPECT_EQ(j["id"].get<std::string>().rfind("msg_", 0), 0u);
  EXPECT_EQ(j["stop_reason"], "tool_use");
  EXPECT_TRUE(j["stop_sequence"].is_null());
  ASSERT_EQ(j["content"].size(), 4u);
  EXPECT_EQ(j["content"][0]["type"], "thinking");
  EXPECT_EQ(j["content"][0]["thinking"], "Hmm.");
  EXPECT_EQ(j["content"][1]["type"], "text");
  EXPECT_EQ(j["content"][1]["text"], "Let me check.");
  EXPECT_EQ(j["content"][2]["type"], "tool_use");
  EXPECT_EQ(j["content"][2]["name"], "get_weather");
  EXPECT_EQ(j["content"][2]["input"],
            json::parse(R"({"location": "Beijing, \"China\"", "days": 3})"));
  EXPECT_EQ(j["content"][3]["input"]["tz"], "UTC+8");
  EXPECT_GT(j["usage"]["input_tokens"].get<int>(), 0);
  EXPECT_GT(j["usage"]["output_tokens"].get<int>(), 0);

  b["stream"] = true;
  Reply s = post_stream(port(), "/v1/messages", b);
  EXPECT_EQ(s.body.find("DSML"), std::string::npos);
  auto evs = parse_sse(s.body);
  ASSERT_GE(evs.size(), 6u);
  EXPECT_EQ(evs.front().event, "message_start");
  EXPECT_EQ(evs.back().event, "message_stop");
  std::string thinking, text, args;
  std::vector<std::string> order;
  for (const auto& e : evs) {
    json d = json::parse(e.data);
    EXPECT_EQ(d["type"], e.event);
    if (e.event == "content_block_start") order.push_back(d["content_block"]["type"]);
    if (e.event == "content_block_delta") {
      const json& dl = d["delta"];
      if (dl["type"] == "thinking_delta") thinking += dl["thinking"].get<std::string>();
      if (dl["type"] == "text_delta") text += dl["text"].get<std::string>();
      if (dl["type"] == "input_json_delta") args += dl["partial_json"].get<std::string>() + "|";
    }
    if (e.event == "message_delta") {
      EXPECT_EQ(d["delta"]["stop_reason"], "tool_use");
    }
  }
  EXPECT_EQ(thinking, "Hmm.");
  EXPECT_EQ(text, "Let me check.");
  EXPECT_EQ(order, (std::vector<std::string>{"thinking", "text", "tool_use", "tool_use"}));
  EXPECT_EQ(args, R"({"location": "Beijing, \"China\"", "days": 3}|{"tz": "UTC+8"}|)");

  // Greedy plain text equals the generator; tool_result follow-up is accepted.
  json p;
  p["max_tokens"] = 8;
  p["temperature"] = 0;
  p["messages"] = json::array({{{"role", "user"}, {"content", "Hello there"}}});
  Reply pr = post(port(), "/v1/messages", p);
  ASSERT_EQ(pr.status, 200) << pr.body;
  EXPECT_EQ(pr.j()["content"][0]["text"], ref_chat(p["messages"], 8));
  EXPECT_EQ(pr.j()["stop_reason"], "max_tokens");
  json f = p;
  f["tools"] = b["tools"];
  f["messages"] = json::parse(R"([{"role":"user","content":"Weather?"},
    {"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"tu1","name":"get_weather","input":{"location":"Paris"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"tu1","content":"18C"}]}])");
  EXPECT_EQ(post(port(), "/v1/messages", f).status, 200);
  // Anthropic-shaped error
  Reply bad = post(port(), "/v1/messages", json{{"max_tokens", 5}, {"messages", "x"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.j()["type"], "error");
  EXPECT_TRUE(bad.j()["error"]["message"].is_string());
}

// A nested field of the wrong type is the client's mistake: 400 naming where it is, not a 500
// "internal error" carrying the JSON library's type_error (found by a mutation fuzzer).
TEST_F(ServerTest, MistypedNestedFieldsAre400s) {
  const std::string chat = "/v1/chat/completions";
  json b = chat_body("hi", 2);
  b["messages"][0]["content"] = json::array({{{"type", 5}, {"text", "x"}}});
  expect_openai_error(post(port(), chat, b), 400, "messages[0].content[0].type must be a string");
  b = chat_body("hi", 2);
  b["messages"] = json::parse(R"([{"role":"user","content":"Weather?"},
    {"role":"assistant","content":"","tool_calls":[{"id":[1],"type":"function",
      "function":{"name":"get_weather","arguments":"{}"}}]},
    {"role":"tool","tool_call_id":"c1","content":"18C"}])");
  expect_openai_error(post(port(), chat, b), 400, "messages[1].tool_calls[0].id must be a string");
  b = chat_body("hi", 2);
  b["tools"] = weather_tools();
  b["tools"][0]["type"] = json::object();
  expect_openai_error(post(port(), chat, b), 400, "tools[0].type must be a string");
  b = chat_body("hi", 2);
  b["response_format"] = {{"type", json::array()}};
  expect_openai_error(post(port(), chat, b), 400, "response_format.type must be a string");
  b = chat_body("hi", 2);
  b["thinking"] = {{"type", 1}};
  expect_openai_error(post(port(), chat, b), 400, "thinking.type must be a string");

  json m = {{"max_tokens", 2},
            {"messages", json::parse(R"([{"role":"user","content":[{"type":7}]}])")}};
  Reply r = post(port(), "/v1/messages", m);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("messages[0].content[0].type must be a string"), std::string::npos)
      << r.body;
  m["messages"] = json::parse(R"([{"role":"user","content":"Weather?"},
    {"role":"assistant","content":[{"type":"tool_use","id":"tu1","name":"get_weather","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"tu1","content":"18C","is_error":"no"}]}])");
  r = post(port(), "/v1/messages", m);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("is_error must be a boolean"), std::string::npos) << r.body;
  m["messages"] = json::parse(R"([{"role":"user","content":"hi"}])");
  m["thinking"] = {{"type", nullptr}, {"budget_tokens", 16}};
  r = post(port(), "/v1/messages", m);  // null reads as absent: not a known thinking type
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("thinking.type"), std::string::npos) << r.body;

  json q = {{"max_output_tokens", 2},
            {"input", json::parse(R"([{"role":"user","content":[{"type":false,"text":"x"}]}])")}};
  expect_openai_error(post(port(), "/v1/responses", q), 400,
                      "input[0].content[0].type must be a string");
  q["input"] = json::parse(R"([{"type":3}])");
  expect_openai_error(post(port(), "/v1/responses", q), 400, "input[0].type must be a string");
  EXPECT_EQ(post(port(), chat, chat_body("hi", 2)).status, 200);  // still serving
}

TEST_F(ServerTest, ResponsesEndpoint) {
  json b;
  b["input"] = "Weather?";
  b["instructions"] = "Be brief.";
  b["reasoning"] = {{"effort", "high"}};
  b["tools"] = json::parse(
      R"([{"type":"function","name":"get_weather","parameters":{"type":"object"}},{"type":"function","name":"get_time","parameters":{"type":"object"}}])");
  b["dsv4_force_output"] = std::string("Hmm.</think>") + kToolDsml;
  Reply r = post(port(), "/v1/responses", b);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos);
  json j = r.j();
  EXPECT_EQ(j["object"], "response");
  EXPECT_EQ(j["status"], "completed");
  ASSERT_EQ(j["output"].size(), 4u);
  EXPECT_EQ(j["output"][0]["type"], "reasoning");
  EXPECT_EQ(j["output"][0]["content"][0]["text"], "Hmm.");
  EXPECT_EQ(j["output"][1]["type"], "message");
  EXPECT_EQ(j["output"][1]["content"][0]["type"], "output_text");
  EXPECT_EQ(j["output"][1]["content"][0]["text"], "Let me check.");
  EXPECT_EQ(j["output"][2]["type"], "function_call");
  EXPECT_EQ(j["output"][2]["name"], "get_weather");
  EXPECT_EQ(j["output"][2]["arguments"], R"({"location": "Beijing, \"China\"", "days": 3})");
  EXPECT_FALSE(j["output"][2]["call_id"].get<std::string>().empty());
  EXPECT_GT(j["usage"]["input_tokens"].get<int>(), 0);

  b["stream"] = true;
  Reply s = post_stream(port(), "/v1/responses", b);
  EXPECT_EQ(s.body.find("DSML"), std::string::npos);
  auto evs = parse_sse(s.body);
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs.front().event, "response.created");
  EXPECT_EQ(evs.back().event, "response.completed");
  std::string text;
  int64_t seq = 0;
  int calls = 0;
  for (const auto& e : evs) {
    json d = json::parse(e.data);
    EXPECT_EQ(d["type"], e.event);
    EXPECT_EQ(d["sequence_number"], seq++);
    if (e.event == "response.output_text.delta") text += d["delta"].get<std::string>();
    if (e.event == "response.function_call_arguments.done") ++calls;
  }
  EXPECT_EQ(text, "Let me check.");
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(json::parse(evs.back().data)["response"]["output"].size(), 4u);

  // Plain greedy text; a function_call_output follow-up is accepted.
  json p = {{"input", "Hello there"}, {"max_output_tokens", 8}, {"temperature", 0}};
  Reply pr = post(port(), "/v1/responses", p);
  ASSERT_EQ(pr.status, 200) << pr.body;
  EXPECT_EQ(pr.j()["status"], "incomplete");
  EXPECT_EQ(pr.j()["output"][0]["content"][0]["text"],
            ref_chat(json::array({{{"role", "user"}, {"content", "Hello there"}}}), 8));
  json f = {{"max_output_tokens", 2},
            {"tools", b["tools"]},
            {"input", json::parse(R"([{"role":"user","content":"Weather?"},
               {"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"location\":\"Paris\"}"},
               {"type":"function_call_output","call_id":"c1","output":"18C"}])")}};
  EXPECT_EQ(post(port(), "/v1/responses", f).status, 200);
}

TEST_F(ServerTest, TokenizeDetokenize) {
  Reply r = post(port(), "/tokenize", json{{"content", "Hello world<｜User｜>"}});
  ASSERT_EQ(r.status, 200);
  json ids = r.j()["tokens"];
  EXPECT_EQ(ids.back(), 128803);
  Reply d = post(port(), "/detokenize", json{{"tokens", ids}});
  EXPECT_EQ(d.j()["content"], "Hello world<｜User｜>");
  expect_openai_error(post(port(), "/detokenize", json{{"tokens", {-1}}}), 400);
}

TEST_F(ServerTest, DisconnectFreesTheSlot) {
  for (int k = 0; k < 3; ++k) {
    json b = chat_body("Tell me a long story", 900, true);
    int chunks = 0;
    post_stream(port(), "/v1/chat/completions", b,
                [&](const std::string&) { return ++chunks < 3; });
  }
  double active = -1;
  for (int i = 0; i < 100; ++i) {
    active = metric(port(), "dsv4_requests_processing");
    if (active == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(active, 0);
  EXPECT_GE(metric(port(), "dsv4_requests_cancelled_total"), 3);
  EXPECT_EQ(metric(port(), "dsv4_kv_cache_bytes"), 0);
}

TEST_F(ServerTest, AnthropicStopSequenceIsTheOneThatMatched) {
  json p;
  p["max_tokens"] = 16;
  p["temperature"] = 0;
  p["messages"] = json::array({{{"role", "user"}, {"content", "Hello there"}}});
  Reply free_run = post(port(), "/v1/messages", p);
  ASSERT_EQ(free_run.status, 200) << free_run.body;
  const std::string text = free_run.j()["content"][0]["text"];
  const std::string stop = test::middle_piece(text, 3);
  ASSERT_FALSE(stop.empty()) << text;
  p["stop_sequences"] = {"zzz-never", stop};
  Reply r = post(port(), "/v1/messages", p);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["stop_reason"], "stop_sequence");
  EXPECT_EQ(r.j()["stop_sequence"], stop);
  EXPECT_EQ(r.j()["content"][0]["text"], text.substr(0, text.find(stop)));
  p["stream"] = true;
  Reply s = post_stream(port(), "/v1/messages", p);
  int deltas = 0;
  for (const auto& e : parse_sse(s.body)) {
    if (e.event != "message_delta") continue;
    ++deltas;
    json d = json::parse(e.data);
    EXPECT_EQ(d["delta"]["stop_reason"], "stop_sequence");
    EXPECT_EQ(d["delta"]["stop_sequence"], stop);
  }
  EXPECT_EQ(deltas, 1);
}

// What the tiny model would have to write after the forced opener to finish the call.
const char* kWeatherCallRest =
    "<｜DSML｜parameter name=\"location\" string=\"true\">Paris</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";

// `body` as a non-streamed request in thinking mode whose output the test hook scripts.
json thinking_request(json body, const std::string& output) {
  body.erase("stream");
  body.erase("stream_options");
  body["chat_template_kwargs"] = {{"thinking", true}};
  body["dsv4_force_output"] = output;
  return body;
}

json named_choice(const std::string& name) {
  return {{"type", "function"}, {"function", {{"name", name}}}};
}

TEST_F(ServerTest, ToolChoiceNamedAndRequiredForceAToolCall) {
  // The forced opener plus the model's continuation (test hook) make a well-formed call.
  json b = chat_body("Weather in Paris?", 60);
  b["tools"] = weather_tools();
  b["tool_choice"] = named_choice("get_weather");
  b["dsv4_force_output"] = kWeatherCallRest;
  const double predicted = metric(port(), "dsv4_tokens_predicted_total");
  Reply r = post(port(), "/v1/chat/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  // /metrics counts the forced opener's tokens as generated, like usage does. (The counters are
  // updated at the end of the step that sent the reply: wait for them briefly.)
  const double used = r.j()["usage"]["completion_tokens"].get<double>();
  double now = metric(port(), "dsv4_tokens_predicted_total");
  for (int i = 0; i < 100 && now < predicted + used; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    now = metric(port(), "dsv4_tokens_predicted_total");
  }
  EXPECT_EQ(now - predicted, used);
  json ch = r.j()["choices"][0];
  EXPECT_EQ(ch["finish_reason"], "tool_calls");
  EXPECT_TRUE(ch["message"]["content"].is_null()) << r.body;
  ASSERT_EQ(ch["message"]["tool_calls"].size(), 1u) << r.body;
  const json& call = ch["message"]["tool_calls"][0];
  EXPECT_FALSE(call["id"].get<std::string>().empty());
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], R"({"location": "Paris"})");

  b["stream"] = true;
  Reply s = post_stream(port(), "/v1/chat/completions", b);
  EXPECT_EQ(s.body.find("DSML"), std::string::npos) << s.body;
  ChatStream cs = collect_chat_stream(s.body);
  EXPECT_TRUE(cs.done);
  EXPECT_EQ(cs.content, "");
  EXPECT_EQ(cs.finish, "tool_calls");
  ASSERT_EQ(cs.tool_calls.size(), 1u);
  EXPECT_FALSE(cs.tool_calls[0]["id"].get<std::string>().empty());
  EXPECT_EQ(cs.tool_calls[0]["name"], "get_weather");
  EXPECT_EQ(cs.tool_calls[0]["arguments"], R"({"location": "Paris"})");

  // "required": the opener stops at name="; the model names the tool.
  json q = chat_body("What time is it?", 60);
  q["tools"] = weather_tools();
  q["tool_choice"] = "required";
  q["dsv4_force_output"] =
      "get_time\">\n<｜DSML｜parameter name=\"tz\" string=\"true\">UTC</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
  r = post(port(), "/v1/chat/completions", q);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  ch = r.j()["choices"][0];
  EXPECT_EQ(ch["finish_reason"], "tool_calls");
  ASSERT_EQ(ch["message"]["tool_calls"].size(), 1u) << r.body;
  EXPECT_FALSE(ch["message"]["tool_calls"][0]["id"].get<std::string>().empty());
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["name"], "get_time");
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["arguments"], R"({"tz": "UTC"})");

  // Thinking mode: the call is forced once the reasoning is closed.
  json t = thinking_request(b, std::string("Paris it is.</think>") + kWeatherCallRest);
  r = post(port(), "/v1/chat/completions", t);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  ch = r.j()["choices"][0];
  EXPECT_EQ(ch["message"]["reasoning_content"], "Paris it is.");
  EXPECT_EQ(ch["finish_reason"], "tool_calls");
  ASSERT_EQ(ch["message"]["tool_calls"].size(), 1u) << r.body;
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["arguments"], R"({"location": "Paris"})");

  // Anthropic "tool" / "any", Responses named function.
  json a;
  a["max_tokens"] = 60;
  a["temperature"] = 0;
  a["tools"] = json::parse(
      R"([{"name":"get_weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}},
          {"name":"get_time","input_schema":{"type":"object"}}])");
  a["messages"] = json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}});
  a["tool_choice"] = {{"type", "tool"}, {"name", "get_weather"}};
  a["dsv4_force_output"] = kWeatherCallRest;
  r = post(port(), "/v1/messages", a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  EXPECT_EQ(r.j()["stop_reason"], "tool_use");
  ASSERT_EQ(r.j()["content"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["content"][0]["type"], "tool_use");
  EXPECT_EQ(r.j()["content"][0]["name"], "get_weather");
  EXPECT_EQ(r.j()["content"][0]["input"], json::parse(R"({"location": "Paris"})"));
  a["tool_choice"] = {{"type", "any"}};
  a["dsv4_force_output"] =
      "get_time\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
  r = post(port(), "/v1/messages", a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["stop_reason"], "tool_use");
  EXPECT_EQ(r.j()["content"][0]["name"], "get_time");
  json rb = {
      {"input", "Weather in Paris?"},
      {"max_output_tokens", 60},
      {"tools",
       json::parse(R"([{"type":"function","name":"get_weather","parameters":{"type":"object"}}])")},
      {"tool_choice", {{"type", "function"}, {"name", "get_weather"}}},
      {"dsv4_force_output", kWeatherCallRest}};
  r = post(port(), "/v1/responses", rb);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["status"], "completed");
  ASSERT_EQ(r.j()["output"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["output"][0]["type"], "function_call");
  EXPECT_EQ(r.j()["output"][0]["name"], "get_weather");
  EXPECT_EQ(r.j()["output"][0]["arguments"], R"({"location": "Paris"})");
}

// Without the test hook the random-weight model writes gibberish after the forced opener and
// never closes the call. Defined behaviour: the call it was made to name is still reported (with
// the arguments completed before the gibberish: none), the block never reaches the content, and
// finish_reason says "length" when the token limit ended the reply (a call cut off, as OpenAI
// reports it), "tool_calls" otherwise.
TEST_F(ServerTest, ToolChoiceWithGibberishNeverLeaksMarkup) {
  const int n = 24;
  json b = chat_body("Weather in Paris?", n);
  b["tools"] = weather_tools();
  b["tool_choice"] = named_choice("get_time");
  Reply r = post(port(), "/v1/chat/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  json ch = r.j()["choices"][0];
  const bool cut = r.j()["usage"]["completion_tokens"] == n;
  EXPECT_EQ(ch["finish_reason"], cut ? "length" : "tool_calls") << r.body;
  EXPECT_TRUE(ch["message"]["content"].is_null()) << r.body;
  ASSERT_EQ(ch["message"]["tool_calls"].size(), 1u) << r.body;
  EXPECT_FALSE(ch["message"]["tool_calls"][0]["id"].get<std::string>().empty());
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["name"], "get_time");
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["arguments"], "{}");

  b["stream"] = true;
  Reply s = post_stream(port(), "/v1/chat/completions", b);
  EXPECT_EQ(s.body.find("DSML"), std::string::npos) << s.body;
  ChatStream cs = collect_chat_stream(s.body);
  EXPECT_EQ(cs.content, "");
  EXPECT_EQ(cs.finish, ch["finish_reason"]);
  ASSERT_EQ(cs.tool_calls.size(), 1u);
  EXPECT_EQ(cs.tool_calls[0]["name"], "get_time");
  EXPECT_FALSE(cs.tool_calls[0]["id"].get<std::string>().empty());

  // "required": the gibberish is the tool's name and rarely parses; whatever it becomes, no
  // markup and no content come out, and any call reported has a name and an id.
  json q = chat_body("What time is it?", n);
  q["tools"] = weather_tools();
  q["tool_choice"] = "required";
  for (bool stream : {false, true}) {
    Reply x = post_chat(port(), q, stream);
    ASSERT_EQ(x.status, 200) << x.body;
    EXPECT_EQ(x.body.find("DSML"), std::string::npos) << x.body;
    json calls = json::array();
    if (stream) {
      ChatStream xs = collect_chat_stream(x.body);
      EXPECT_EQ(xs.content, "");
      for (const auto& c : xs.tool_calls) calls.push_back({{"id", c["id"]}, {"name", c["name"]}});
    } else {
      const json m = x.j()["choices"][0]["message"];
      EXPECT_TRUE(m["content"].is_null() || m["content"] == "") << x.body;
      if (m.contains("tool_calls"))
        for (const auto& c : m["tool_calls"])
          calls.push_back({{"id", c["id"]}, {"name", c["function"]["name"]}});
    }
    for (const auto& c : calls) {
      EXPECT_FALSE(c["id"].get<std::string>().empty());
      EXPECT_FALSE(c["name"].get<std::string>().empty());
    }
  }
}

// The calls of a chat reply, streamed or not: [{"id", "name", "arguments"}].
json chat_calls(const Reply& r, bool stream) {
  json calls = json::array();
  if (stream) {
    for (const auto& c : collect_chat_stream(r.body).tool_calls) calls.push_back(c);
    return calls;
  }
  const json m = r.j()["choices"][0]["message"];
  if (m.contains("tool_calls"))
    for (const auto& c : m["tool_calls"])
      calls.push_back({{"id", c["id"]},
                       {"name", c["function"]["name"]},
                       {"arguments", c["function"]["arguments"]}});
  return calls;
}

bool declared(const json& name) { return name == "get_weather" || name == "get_time"; }

// tool_choice "required" with several tools: the name the model writes after the forced
// `name="` is constrained to a declared tool. The test hook scripts an undeclared one: the
// constraint leaves the script where it leaves the declared names (the model's own choice among
// the allowed tokens is taken there), so the reply still calls a declared tool.
TEST_F(ServerTest, ToolChoiceRequiredNamesADeclaredTool) {
  const std::string undeclared =
      "get_stock_price\">\n<｜DSML｜parameter name=\"symbol\" string=\"true\">DSV4</｜DSML｜"
      "parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
  json q = chat_body("What time is it?", 60);
  q["tools"] = weather_tools();
  q["tool_choice"] = "required";
  q["dsv4_force_output"] = undeclared;
  for (bool stream : {false, true}) {
    Reply r = post_chat(port(), q, stream);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("get_stock"), std::string::npos) << r.body;
    const json calls = chat_calls(r, stream);
    ASSERT_EQ(calls.size(), 1u) << r.body;
    EXPECT_TRUE(declared(calls[0]["name"])) << r.body;
    EXPECT_FALSE(calls[0]["id"].get<std::string>().empty());
  }
  // The random-weight model on its own, sampling: every reply calls a declared tool.
  json free = chat_body("What time is it?", 40);
  free["tools"] = weather_tools();
  free["tool_choice"] = "required";
  free["temperature"] = 1.5;
  for (int seed = 1; seed <= 4; ++seed) {
    free["seed"] = seed;
    Reply r = post(port(), "/v1/chat/completions", free);
    ASSERT_EQ(r.status, 200) << r.body;
    const json calls = chat_calls(r, false);
    ASSERT_EQ(calls.size(), 1u) << r.body;
    EXPECT_TRUE(declared(calls[0]["name"])) << r.body;
  }
  // Thinking mode: the constraint starts after </think> and the forced opener.
  json t = thinking_request(q, "Stocks.</think>" + undeclared);
  Reply r = post(port(), "/v1/chat/completions", t);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["choices"][0]["message"]["reasoning_content"], "Stocks.");
  json calls = chat_calls(r, false);
  ASSERT_EQ(calls.size(), 1u) << r.body;
  EXPECT_TRUE(declared(calls[0]["name"])) << r.body;

  // Anthropic "any" and the Responses API share the mechanism.
  json a;
  a["max_tokens"] = 60;
  a["temperature"] = 0;
  a["tools"] = json::parse(
      R"([{"name":"get_weather","input_schema":{"type":"object"}},
          {"name":"get_time","input_schema":{"type":"object"}}])");
  a["messages"] = json::array({{{"role", "user"}, {"content", "Stocks?"}}});
  a["tool_choice"] = {{"type", "any"}};
  a["dsv4_force_output"] = undeclared;
  r = post(port(), "/v1/messages", a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["stop_reason"], "tool_use") << r.body;
  ASSERT_EQ(r.j()["content"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["content"][0]["type"], "tool_use");
  EXPECT_TRUE(declared(r.j()["content"][0]["name"])) << r.body;
  json rb = {{"input", "Stocks?"},
             {"max_output_tokens", 60},
             {"temperature", 0},
             {"tools", json::parse(R"([{"type":"function","name":"get_weather","parameters":{}},
                                       {"type":"function","name":"get_time","parameters":{}}])")},
             {"tool_choice", "required"},
             {"dsv4_force_output", undeclared}};
  r = post(port(), "/v1/responses", rb);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["output"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["output"][0]["type"], "function_call");
  EXPECT_TRUE(declared(r.j()["output"][0]["name"])) << r.body;

  // One tool: its whole name is forced, so the script is what comes after it.
  json one = chat_body("Weather in Paris?", 60);
  one["tools"] = json::array({weather_tools()[0]});
  one["tool_choice"] = "required";
  one["dsv4_force_output"] = kWeatherCallRest;
  r = post(port(), "/v1/chat/completions", one);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "tool_calls");
  calls = chat_calls(r, false);
  ASSERT_EQ(calls.size(), 1u) << r.body;
  EXPECT_EQ(calls[0]["name"], "get_weather");
  EXPECT_EQ(calls[0]["arguments"], R"({"location": "Paris"})");

  // A tool whose name a DSML call cannot hold can never be the one called.
  json bad = chat_body("hi", 8);
  bad["tools"] = weather_tools();
  bad["tools"][1]["function"]["name"] = "say \"hi\"";
  bad["tool_choice"] = "required";
  Reply e = post(port(), "/v1/chat/completions", bad);
  expect_openai_error(e, 400, "say \"hi\"");
  EXPECT_EQ(e.j()["error"]["param"], "tool_choice");
  bad["tool_choice"] = "auto";  // nothing is forced: accepted as before
  EXPECT_EQ(post(port(), "/v1/chat/completions", bad).status, 200);
}

// A forced call that breaks the DSML grammar ends the generation there (its slot is freed) instead
// of running to the token limit; the parameters completed before the break are reported.
// The output tokens of a reply forced to call get_weather whose model output is `script`, up to
// and including the token that completes `marker` in it: the forced opener's tokens and the
// script's.
int forced_get_weather_tokens_through(const std::string& script, const std::string& marker) {
  const tok::Tokenizer tk = tok::Tokenizer::load(test::synth_tiny());
  const std::vector<int32_t> ids = tk.encode(script);
  size_t upto = 0;
  while (upto < ids.size() &&
         tk.decode(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<long>(upto)))
                 .find(marker) == std::string::npos)
    ++upto;
  return static_cast<int>(
      tk.encode("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n").size() + upto);
}

// A chat reply (streamed or not) that is exactly one get_weather({"location": "Paris"}) call,
// finished as tool_calls after `tokens` output tokens, with no content and none of the scripts'
// filler (" and on") in it.
void expect_paris_weather_call(const Reply& r, bool stream, int tokens) {
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("DSML"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("and on"), std::string::npos) << r.body;
  ChatStream cs;
  if (stream) cs = collect_chat_stream(r.body);
  const json usage = stream ? cs.usage : r.j()["usage"];
  EXPECT_EQ(usage["completion_tokens"].get<int>(), tokens) << r.body;
  EXPECT_EQ(stream ? cs.finish : r.j()["choices"][0]["finish_reason"].get<std::string>(),
            "tool_calls")
      << r.body;
  if (stream) {
    EXPECT_EQ(cs.content, "") << r.body;
  } else {
    EXPECT_TRUE(r.j()["choices"][0]["message"]["content"].is_null()) << r.body;
  }
  const json calls = chat_calls(r, stream);
  ASSERT_EQ(calls.size(), 1u) << r.body;
  EXPECT_EQ(calls[0]["name"], "get_weather");
  EXPECT_EQ(calls[0]["arguments"], R"({"location": "Paris"})");
}

// A forced call ends the reply when its block closes: the model writing on instead of stopping
// does not hold the slot until the token limit, and nothing it writes after the block shows.
TEST_F(ServerTest, ForcedToolCallEndsWithItsBlock) {
  std::string filler;
  for (int i = 0; i < 200; ++i) filler += " and on";
  std::string rest = kWeatherCallRest;
  rest.resize(rest.find("<｜end▁of▁sentence｜>"));
  const int limit = 150;  // fewer than the script's tokens: without the stop, "length"
  const int until_close = forced_get_weather_tokens_through(rest + filler, "</｜DSML｜tool_calls>");
  ASSERT_LT(until_close, limit / 2);
  json b = chat_body("Weather in Paris?", limit);
  b["tools"] = weather_tools();
  for (bool named : {true, false}) {
    // "required": the forced opener ends before the name, which the script then writes.
    b["tool_choice"] = named ? named_choice("get_weather") : json("required");
    b["dsv4_force_output"] = (named ? "" : "get_weather\">\n") + rest + filler;
    for (bool stream : {false, true}) {
      b["stream_options"] = stream ? json{{"include_usage", true}} : json(nullptr);
      expect_paris_weather_call(post_chat(port(), b, stream), stream, until_close);
    }
  }
}

TEST_F(ServerTest, BrokenForcedToolCallStopsAtTheBreak) {
  std::string filler;
  for (int i = 0; i < 200; ++i) filler += " and on";
  const std::string broken =
      "<｜DSML｜parameter name=\"location\" string=\"true\">Paris</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"days\" string=\"maybe\">" +
      filler;
  const int limit = 150;  // fewer than the script's tokens: without the stop, "length"
  // The reply ends with the token that breaks the grammar (the "m" of "maybe"), after the forced
  // opener and the script's tokens before it.
  const int until_break = forced_get_weather_tokens_through(broken, "\"days\" string=\"m");
  ASSERT_LT(until_break, limit / 2);
  json b = chat_body("Weather in Paris?", limit);
  b["tools"] = weather_tools();
  b["tool_choice"] = named_choice("get_weather");
  b["dsv4_force_output"] = broken;
  for (bool stream : {false, true}) {
    b["stream_options"] = stream ? json{{"include_usage", true}} : json(nullptr);
    expect_paris_weather_call(post_chat(port(), b, stream), stream, until_break);
  }

  // Thinking mode, and the Anthropic shape.
  json t = thinking_request(b, "Paris it is.</think>" + broken);
  Reply r = post(port(), "/v1/chat/completions", t);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(
      r.j()["usage"]["completion_tokens"].get<int>(),
      until_break +
          static_cast<int>(tok::Tokenizer::load(model_dir()).encode("Paris it is.</think>").size()))
      << r.body;
  EXPECT_EQ(r.j()["choices"][0]["finish_reason"], "tool_calls") << r.body;
  EXPECT_EQ(r.j()["choices"][0]["message"]["reasoning_content"], "Paris it is.");
  ASSERT_EQ(chat_calls(r, false).size(), 1u) << r.body;
  json a;
  a["max_tokens"] = limit;
  a["temperature"] = 0;
  a["tools"] = json::parse(R"([{"name":"get_weather","input_schema":{"type":"object"}}])");
  a["messages"] = json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}});
  a["tool_choice"] = {{"type", "tool"}, {"name", "get_weather"}};
  a["dsv4_force_output"] = broken;
  r = post(port(), "/v1/messages", a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["stop_reason"], "tool_use") << r.body;
  EXPECT_EQ(r.j()["usage"]["output_tokens"].get<int>(), until_break) << r.body;
  ASSERT_EQ(r.j()["content"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["content"][0]["input"], json::parse(R"({"location": "Paris"})"));
}

// Logprobs cover message content only, as OpenAI's: no entry for a tool call's tokens, forced or
// written by the model; a reply that is only a tool call has `logprobs.content` null, and no
// streamed chunk carries entries for it.
TEST_F(ServerTest, LogprobsLeaveOutToolCallTokens) {
  auto lp_tokens = [](const json& content) {
    std::string s;
    for (const auto& e : content) {
      EXPECT_LE(e["logprob"].get<double>(), 0.0);
      EXPECT_EQ(e["top_logprobs"].size(), 2u);
      s += e["token"].get<std::string>();
    }
    return s;
  };
  // Streamed entries, in order, and whether any rode on a tool-call chunk.
  auto stream_lp = [&](const std::string& raw, bool* on_call) {
    json all = json::array();
    for (const auto& ev : parse_sse(raw)) {
      if (ev.data == "[DONE]") continue;
      const json c = json::parse(ev.data);
      if (c["choices"].empty()) continue;
      const json& ch = c["choices"][0];
      if (ch["logprobs"].is_null()) continue;
      if (ch["delta"].contains("tool_calls")) *on_call = true;
      for (const auto& e : ch["logprobs"]["content"]) all.push_back(e);
    }
    return all;
  };

  json b = chat_body("Weather in Paris?", 60);
  b["tools"] = weather_tools();
  b["tool_choice"] = named_choice("get_weather");
  b["dsv4_force_output"] = kWeatherCallRest;
  b["logprobs"] = true;
  b["top_logprobs"] = 2;
  Reply r = post(port(), "/v1/chat/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["choices"][0]["message"]["tool_calls"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["choices"][0]["logprobs"], json::parse(R"({"content": null, "refusal": null})"))
      << r.body;
  b["stream"] = true;
  bool on_call = false;
  Reply s = post_stream(port(), "/v1/chat/completions", b);
  EXPECT_TRUE(stream_lp(s.body, &on_call).empty()) << s.body;
  EXPECT_EQ(collect_chat_stream(s.body).tool_calls.size(), 1u);

  // Thinking mode: the reasoning's tokens and </think> keep theirs, the call's have none.
  json t = thinking_request(b, std::string("Paris it is.</think>") + kWeatherCallRest);
  r = post(port(), "/v1/chat/completions", t);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["choices"][0]["message"]["tool_calls"].size(), 1u) << r.body;
  const json whole = r.j()["choices"][0]["logprobs"]["content"];
  EXPECT_EQ(lp_tokens(whole), "Paris it is.</think>") << r.body;
  t["stream"] = true;
  s = post_stream(port(), "/v1/chat/completions", t);
  const json streamed = stream_lp(s.body, &on_call);
  EXPECT_FALSE(on_call) << s.body;
  EXPECT_EQ(lp_tokens(streamed), lp_tokens(whole)) << s.body;

  // Content before a call the model opened itself: the content's tokens only.
  json c = chat_body("Weather?", 200);
  c["tools"] = weather_tools();
  c["dsv4_force_output"] = kToolDsml;
  c["logprobs"] = true;
  c["top_logprobs"] = 2;
  r = post(port(), "/v1/chat/completions", c);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["choices"][0]["message"]["content"], "Let me check.");
  ASSERT_EQ(r.j()["choices"][0]["message"]["tool_calls"].size(), 2u) << r.body;
  const std::string text = lp_tokens(r.j()["choices"][0]["logprobs"]["content"]);
  EXPECT_EQ(text.substr(0, 13), "Let me check.") << r.body;
  EXPECT_EQ(text.find_first_not_of("\n", 13), std::string::npos) << r.body;
  c["stream"] = true;
  s = post_stream(port(), "/v1/chat/completions", c);
  EXPECT_EQ(lp_tokens(stream_lp(s.body, &on_call)), text) << s.body;
  EXPECT_FALSE(on_call) << s.body;
}

TEST_F(ServerTest, ToolChoiceErrors) {
  const std::string p = "/v1/chat/completions";
  json b = chat_body("hi", 4);
  b["tools"] = weather_tools();
  b["tool_choice"] = named_choice("get_stock_price");
  Reply r = post(port(), p, b);
  expect_openai_error(r, 400, "get_stock_price");
  EXPECT_EQ(r.j()["error"]["param"], "tool_choice");
  b["tool_choice"] = "sometimes";
  expect_openai_error(post(port(), p, b), 400, "tool_choice");
  b["tool_choice"] = {{"type", "function"}};
  expect_openai_error(post(port(), p, b), 400, "tool_choice");
  b["tool_choice"] = 7;
  expect_openai_error(post(port(), p, b), 400, "tool_choice");
  b.erase("tools");
  b["tool_choice"] = "required";
  r = post(port(), p, b);
  expect_openai_error(r, 400, "no tools");
  EXPECT_EQ(r.j()["error"]["param"], "tool_choice");
  b["tools"] = json::array();
  expect_openai_error(post(port(), p, b), 400, "no tools");
  b["tool_choice"] = "auto";  // without tools: fine, as before
  EXPECT_EQ(post(port(), p, b).status, 200);

  json a;
  a["max_tokens"] = 4;
  a["messages"] = json::array({{{"role", "user"}, {"content", "hi"}}});
  a["tools"] = json::parse(R"([{"name":"get_weather","input_schema":{"type":"object"}}])");
  a["tool_choice"] = {{"type", "tool"}, {"name", "nope"}};
  r = post(port(), "/v1/messages", a);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.j()["type"], "error");
  EXPECT_NE(r.j()["error"]["message"].get<std::string>().find("nope"), std::string::npos);
  a["tool_choice"] = {{"type", "sometimes"}};
  EXPECT_EQ(post(port(), "/v1/messages", a).status, 400);
  a.erase("tools");
  a["tool_choice"] = {{"type", "any"}};
  EXPECT_EQ(post(port(), "/v1/messages", a).status, 400);
  json rb = {{"input", "hi"},
             {"tools", json::parse(R"([{"type":"function","name":"f","parameters":{}}])")},
             {"tool_choice", {{"type", "function"}, {"name", "g"}}}};
  expect_openai_error(post(port(), "/v1/responses", rb), 400, "\"g\"");
}

// Sends a request on a raw socket and hangs up without reading the reply.
int raw_request(int port, const std::string& path, const json& body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  const std::string b = body.dump();
  const std::string msg =
      "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + kKey +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(b.size()) +
      "\r\n\r\n" + b;
  if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_F(ServerTest, NonStreamingDisconnectFreesTheSlot) {
  // The reply body and headers are what they were (one JSON document, not chunked).
  Reply ok = post(port(), "/v1/chat/completions", chat_body("hi", 3));
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(ok.headers.find("Content-Type")->second, "application/json");
  EXPECT_EQ(ok.headers.count("Transfer-Encoding"), 0u);
  EXPECT_EQ(std::stoul(ok.headers.find("Content-Length")->second), ok.body.size());
  EXPECT_NO_THROW(json::parse(ok.body));

  json anthropic = {
      {"max_tokens", kCtx},
      {"temperature", 0},
      {"messages", json::array({{{"role", "user"}, {"content", "Tell me a story"}}})}};
  const std::vector<std::pair<std::string, json>> requests = {
      {"/v1/chat/completions", chat_body("Tell me a long story", kCtx)},
      {"/v1/messages", anthropic},
      {"/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", kCtx}}},
      {"/v1/responses", json{{"input", "Tell me a story"}, {"max_output_tokens", kCtx}}}};
  for (const auto& [path, body] : requests) {
    const double cancelled = metric(port(), "dsv4_requests_cancelled_total");
    const double predicted = metric(port(), "dsv4_tokens_predicted_total");
    const int fd = raw_request(port(), path, body);
    ASSERT_GE(fd, 0) << path;
    // Hang up once it is generating.
    for (int i = 0; i < 200 && metric(port(), "dsv4_tokens_predicted_total") < predicted + 5; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    close(fd);
    const auto t0 = std::chrono::steady_clock::now();
    double active = -1, inflight = -1;
    for (int i = 0; i < 300; ++i) {
      active = metric(port(), "dsv4_requests_processing");
      inflight = metric(port(), "dsv4_http_inflight");
      if (active == 0 && inflight == 0 &&
          metric(port(), "dsv4_requests_cancelled_total") > cancelled)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(active, 0) << path;
    EXPECT_EQ(inflight, 0) << path;
    EXPECT_EQ(metric(port(), "dsv4_requests_cancelled_total"), cancelled + 1) << path;
    EXPECT_LT(metric(port(), "dsv4_tokens_predicted_total") - predicted, kCtx / 2)
        << path << ": the sequence ran on after the client left";
    std::printf("[%s] slot freed %.2f s after the client hung up\n", path.c_str(), waited);
  }
  EXPECT_EQ(metric(port(), "dsv4_kv_cache_bytes"), 0);
}

TEST_F(ServerTest, MetricsExposition) {
  post(port(), "/v1/chat/completions", chat_body("hi", 2));
  Reply m = get(port(), "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* name :
       {"dsv4_requests_total", "dsv4_prompt_tokens_total", "dsv4_tokens_predicted_total",
        "dsv4_prompt_tokens_seconds", "dsv4_predicted_tokens_seconds", "dsv4_requests_deferred",
        "dsv4_requests_processing", "dsv4_kv_cache_bytes"}) {
    EXPECT_NE(m.body.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
  EXPECT_GT(metric(port(), "dsv4_tokens_predicted_total"), 0);
}

json short_chat(int max_tokens) {
  return json{{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
              {"max_tokens", max_tokens},
              {"temperature", 0}};
}

// A second server with one slot and a queue of one.
TEST(ServerLimits, QueueFullGives503) {
  ServerProc srv;
  srv.start({"-m", test::synth_tiny().string(), "--port", "0", "-np", "1", "--queue", "1", "-c",
             "4096", "-t", "2"});
  std::atomic<int> ok{0}, busy{0};
  std::vector<std::thread> th;
  // Four requests at once against one slot and a queue of one: two are taken (running + queued),
  // the rest get 503.
  for (int i = 0; i < 4; ++i) {
    th.emplace_back([&] {
      Reply r = post(srv.port, "/v1/chat/completions", short_chat(16), "");
      if (r.status == 200) ++ok;
      if (r.status == 503) {
        ++busy;
        bool retry = false;
        for (auto& [k, v] : r.headers) retry |= k == "Retry-After";
        EXPECT_TRUE(retry);
        expect_openai_error(r, 503);
      }
    });
  }
  for (auto& t : th) t.join();
  EXPECT_GE(ok.load(), 2);
  EXPECT_GE(busy.load(), 1);
  EXPECT_EQ(metric(srv.port, "dsv4_requests_processing"), 0);
  srv.stop();
}

// A server with a 2 s time limit. The long request asks for nearly the whole context (8192
// tokens; greedy, the random-weight model does not end it earlier). The tiny model decodes
// about 310 tok/s with 2 threads in a release build here (`dsv4 run -n 3000`: 9.7 s), so that
// takes some 25 s; a limit of 10 s against 3000 tokens, as before, was not enough on an idle
// machine.
TEST(ServerLimits, TimeoutGives504AndFreesTheSlot) {
  ServerProc srv;
  srv.start(
      {"-m", test::synth_tiny().string(), "--port", "0", "-np", "1", "-t", "2", "--timeout", "2"});
  Reply t = post(srv.port, "/v1/chat/completions", short_chat(8000), "");
  expect_openai_error(t, 504);
  // The slot is free again: a one-token request fits in the limit even under sanitizers.
  EXPECT_EQ(post(srv.port, "/v1/chat/completions", short_chat(1), "").status, 200);
  EXPECT_EQ(metric(srv.port, "dsv4_requests_processing"), 0);
  srv.stop();
}

// Randomized bodies: mutated valid requests must give 2xx/4xx, never a crash or a hang.
TEST(ServerFuzz, RandomizedBodiesNeverCrash) {
  ServerProc srv;
  srv.start({"-m", test::synth_tiny().string(), "--port", "0", "-np", "2", "-c", "512", "-t", "2",
             "-n", "3"});
  const char* env = std::getenv("DSV4_FUZZ_ITERS");
  const int iters = env ? std::atoi(env) : 400;
  std::mt19937 rng(12345);
  const std::vector<std::string> seeds = {
      R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0.5,"stream":false})",
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"x"}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto","stream":true,"max_tokens":2})",
      R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"1","content":"r"}],"max_tokens":2})",
  };
  const std::vector<std::string> paths = {"/v1/chat/completions", "/v1/completions", "/v1/messages",
                                          "/v1/responses",        "/tokenize",       "/detokenize"};
  const std::vector<std::string> frags = {"null",
                                          "-1",
                                          "1e308",
                                          "\"\"",
                                          "[]",
                                          "{}",
                                          "true",
                                          "\"\\ud800\"",
                                          "99999999999999999999",
                                          "[[[[",
                                          "\"\xff\xfe\"",
                                          "0.5",
                                          "2",
                                          "\"auto\"",
                                          "\"user\"",
                                          "[{\"type\":\"text\",\"text\":\"t\"}]",
                                          "\"<｜DSML｜x\"",
                                          "{\"type\":\"enabled\"}"};
  std::map<int, int> statuses;
  for (int i = 0; i < iters; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    const int kind = rng() % 10;
    if (kind == 0) {  // byte flips
      for (int k = 0; k < 1 + (int)(rng() % 4); ++k)
        s[rng() % s.size()] = static_cast<char>(rng() % 256);
    } else if (kind == 1) {  // truncation
      s = s.substr(0, rng() % s.size());
    } else {  // structured: replace / add / drop values, valid JSON with odd contents
      try {
        json j = json::parse(s);
        auto frag = [&]() {
          const std::string f = frags[rng() % frags.size()];
          try {
            return json::parse(f);
          } catch (...) {
            return json(f);
          }
        };
        const int ops = 1 + rng() % 3;
        for (int op = 0; op < ops; ++op) {
          const int what = rng() % 6;
          std::vector<std::string> keys;
          for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
          if (what == 0 && !keys.empty())
            j[keys[rng() % keys.size()]] = frag();
          else if (what == 1 && !keys.empty())
            j.erase(keys[rng() % keys.size()]);
          else if (what == 2 && j.contains("messages") && j["messages"].is_array() &&
                   !j["messages"].empty()) {
            json& msg = j["messages"][rng() % j["messages"].size()];
            const char* fields[] = {"content",           "role", "tool_calls", "tool_call_id",
                                    "reasoning_content", "name"};
            if (msg.is_object()) msg[fields[rng() % 6]] = frag();
          } else if (what == 3) {
            const char* extras[] = {"n",
                                    "max_tokens",
                                    "temperature",
                                    "top_logprobs",
                                    "logprobs",
                                    "stop",
                                    "prompt",
                                    "input",
                                    "tokens",
                                    "content",
                                    "system",
                                    "tool_choice",
                                    "reasoning_effort",
                                    "thinking",
                                    "chat_template_kwargs",
                                    "stream_options",
                                    "seed",
                                    "top_k"};
            j[extras[rng() % 18]] = frag();
          } else if (what == 4) {
            j["max_tokens"] = static_cast<int>(rng() % 5) - 1;
          } else {
            j["stream"] = rng() % 2 == 0;
          }
        }
        s = j.dump(-1, ' ', false, json::error_handler_t::replace);
      } catch (...) {
      }
    }
    const std::string& path = paths[rng() % paths.size()];
    Reply r = post(srv.port, path, s, "");
    statuses[r.status]++;
    ASSERT_TRUE(r.status == 200 || (r.status >= 400 && r.status < 500))
        << "status " << r.status << " for " << path << " " << s;
    if (r.status >= 400) {
      json j;
      ASSERT_NO_THROW(j = json::parse(r.body)) << r.body;
      ASSERT_TRUE(j["error"]["message"].is_string());
    }
  }
  ASSERT_TRUE(srv.alive());
  EXPECT_EQ(get(srv.port, "/health").status, 200);
  std::string summary;
  for (auto& [k, v] : statuses) summary += std::to_string(k) + ":" + std::to_string(v) + " ";
  std::printf("fuzz: %d requests, statuses %s\n", iters, summary.c_str());
  srv.stop();
}

}  // namespace
}  // namespace dsv4
