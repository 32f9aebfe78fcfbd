// Internals shared by the endpoint files of the server: errors, request-field readers, the
// per-request generation driver (Run) that turns scheduler events into reasoning / content /
// tool-call events through the DSML output parser, and SSE helpers.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "api/chat_encoder.h"
#include "api/output_parser.h"
#include "model/model.h"
#include "runtime/scheduler.h"
#include "runtime/token_constraint.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"
#include "util/thread_pool.h"

namespace dsv4::server {

// Request bodies keep their key order (tool schemas and arguments are re-rendered in order).
using json = nlohmann::ordered_json;
using ojson = nlohmann::ordered_json;

// An error answered to the client: HTTP status + OpenAI error object.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& msg, std::string param = "", std::string type = "",
           std::string code = "")
      : std::runtime_error(msg),
        status(status),
        param(std::move(param)),
        type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string param, type, code;
};

std::string error_type_for(int status);
ojson error_body(int status, const std::string& message, const std::string& param = "",
                 const std::string& type = "", const std::string& code = "");
void send_error(httplib::Response& res, const ApiError& e, bool anthropic = false);

struct Metrics {
  std::atomic<uint64_t> requests{0}, requests_ok{0}, requests_error{0}, requests_rejected{0};
  std::atomic<uint64_t> chat{0}, completions{0}, responses{0}, messages{0};
  std::atomic<uint64_t> prompt_tokens{0}, completion_tokens{0};
  std::atomic<int64_t> http_inflight{0};
};

struct Ctx {
  ServerOptions opts;
  std::string model_id;
  std::unique_ptr<Model> model;
  std::unique_ptr<tok::Tokenizer> tok;
  std::shared_ptr<const VocabIndex> vocab;  // for constraining the tool name (force_tool_call)
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Scheduler> sched;
  std::atomic<bool> ready{false};
  std::string load_error;
  Metrics metrics;
  int64_t created = 0;  // unix time the model was loaded
};

// ---- Request-field readers (throw ApiError 400 naming the field) --------------------------

const json* field(const json& body, const char* key);  // null when absent or JSON null
double get_number(const json& body, const char* key, double lo, double hi, double def);
int64_t get_int(const json& body, const char* key, int64_t lo, int64_t hi, int64_t def);
bool get_bool(const json& body, const char* key, bool def);
std::string get_string(const json& body, const char* key, const std::string& def);
// The same inside a request's nested object `obj`, named `where` in the error ("messages[2]"),
// reported under the request field `param`.
std::string get_string_in(const json& obj, const char* key, const std::string& def,
                          const std::string& where, const std::string& param);
// "stop" / "stop_sequences": string or array of strings.
std::vector<std::string> get_stops(const json& body, const char* key);
// Parses the body as a JSON object or throws ApiError 400.
json parse_body(const httplib::Request& req);

// Sampling fields shared by the OpenAI endpoints (temperature, top_p, top_k, min_p, penalties,
// seed, repeat_penalty).
void read_sampling(const json& body, SamplingParams& sp);

// ---- Generation driver ------------------------------------------------------------------------

struct RunEvent {
  enum class Type { kReasoning, kContent, kToolCall };
  Type type;
  std::string text;  // reasoning / content delta
  size_t tool_index = 0;
  std::string tool_id, tool_name, tool_args;
};

struct LogprobEntry {
  int32_t token;
  float logprob;
  std::vector<TokenLogprob> top;
};

struct RunOptions {
  bool parse = true;              // DSML / reasoning parsing (false: raw text completions)
  bool thinking = false;          // output starts with reasoning
  bool tool_call_forced = false;  // the output was made to open a tool call (force_tool_call)
};

class Run {
 public:
  // Submits to the scheduler. Throws ApiError: 400 (prompt too long, bad ids), 503 (queue full).
  Run(Ctx& ctx, GenRequest req, RunOptions opts);
  ~Run();
  // Waits up to `wait` for progress, appends events; returns true once finished.
  bool poll(std::vector<RunEvent>& out, std::chrono::milliseconds wait);
  void cancel();
  bool finished() const { return finished_; }

  const GenEvent& done() const { return done_; }
  const api::ParsedCompletion& message() const { return parser_.message(); }
  const std::string& raw_text() const { return raw_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  // Logprob entries gathered since the last call: those of the tokens whose text has been
  // released as reasoning or content (or read as a marker such as </think>), never those of the
  // tokens of a tool call (see settle_logprobs()).
  std::vector<LogprobEntry> take_logprobs();
  // "stop", "length", "tool_calls"; throws ApiError for failures (error, timeout).
  std::string finish_reason() const;
  // The stop string that ended the generation (the one that matched), if any.
  std::string stop_sequence() const;
  bool has_tool_calls() const { return !parser_.message().tool_calls.empty(); }
  // Stopped by the token limit or the context.
  bool cut_off() const;
  // The reply is tool calls: complete ones, or calls salvaged from a forced block that was not
  // cut off by the limit (a call cut off by the limit reports "length" like OpenAI's).
  bool ended_with_tool_calls() const;
  // Throws ApiError when the run ended with an error or timeout.
  void check_failure() const;

 private:
  void handle_parser_events(std::vector<api::OutputEvent>& evs, std::vector<RunEvent>& out);
  // Moves the entries of pending_lp_ whose place in the output the parser has decided to
  // logprobs_, dropping those of tool-call tokens.
  void settle_logprobs();
  Ctx& ctx_;
  RunOptions opts_;
  std::shared_ptr<RequestHandle> h_;
  api::OutputParser parser_;
  bool finished_ = false;
  GenEvent done_;
  std::string raw_;
  std::vector<LogprobEntry> logprobs_;
  // An entry waiting for the parser, with the bytes of raw_ its token's event released.
  struct PendingLogprob {
    LogprobEntry entry;
    size_t begin = 0, end = 0;
  };
  std::deque<PendingLogprob> pending_lp_;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  std::vector<std::string> stops_;
  // Index in stops_ of the stop string that ended the generation, set by the generator (on the
  // scheduler's thread, before the final event is queued) through GenerationParams.
  std::shared_ptr<std::atomic<int>> stop_index_ = std::make_shared<std::atomic<int>>(-1);
  bool want_lp_ = false;
};

// Waits for a non-streaming run to finish. Cancels it (freeing its sequence at the scheduler's
// next step) and throws ApiError 499 when the client closes the connection meanwhile.
void wait_for_reply(const httplib::Request& req, Run& run);

// Removes the DSML marker from text shown to clients.
std::string strip_dsml(std::string s);
std::string random_id(const std::string& prefix, size_t n_hex = 24);
int64_t unix_now();

// Token text for logprobs: the token's bytes; invalid UTF-8 pieces are replaced.
std::string token_text(const tok::Tokenizer& tok, int32_t id);
ojson openai_logprobs(const tok::Tokenizer& tok, const std::vector<LogprobEntry>& lp);

// Builds the common GenRequest part (prompt limit and test hook); `body` may carry
// "dsv4_force_output" when test hooks are on.
void finish_request(Ctx& ctx, const json& body, GenRequest& req);

// Streams SSE produced by `step` (called repeatedly: appends SSE text to `out`, returns false
// when the stream is complete). Cancels `run` when the client goes away.
void stream_sse(httplib::Response& res, std::shared_ptr<Run> run,
                std::function<bool(std::string& out)> step);
std::string sse_data(const ojson& j);
std::string sse_event(const std::string& event, const ojson& j);

// ---- Endpoint handlers (one file each) ------------------------------------------------------

void handle_chat(Ctx& ctx, const httplib::Request& req, httplib::Response& res);
void handle_completions(Ctx& ctx, const httplib::Request& req, httplib::Response& res);
void handle_responses(Ctx& ctx, const httplib::Request& req, httplib::Response& res);
void handle_messages(Ctx& ctx, const httplib::Request& req, httplib::Response& res);

// Chat-message conversion shared by /v1/chat/completions (OpenAI messages → encoder messages).
ojson convert_openai_messages(const json& messages);
ojson convert_openai_tools(const json& tools, const std::string& param);
// Thinking mode and effort from reasoning_effort / reasoning.effort / thinking.type /
// chat_template_kwargs.
void read_thinking(const Ctx& ctx, const json& body, api::ChatOptions& co);

// What a request's tool_choice asks for.
struct ToolChoice {
  ojson tools;            // the tools to render into the prompt (null: none)
  bool required = false;  // the reply must be a tool call ("required", Anthropic "any", named)
  std::string name;       // ... to this function (a named choice, or the only tool given)
};
// Reads tool_choice against the converted `tools` (null or empty: none were given). Accepts the
// OpenAI Chat shapes ("none" | "auto" | "required" | {"type": "function", "function": {"name"}}),
// the Responses shape ({"type": "function", "name"}) and the Anthropic one ({"type": "auto" |
// "any" | "tool" | "none", "name"}). Throws ApiError 400 naming tool_choice.
ToolChoice read_tool_choice(const json& body, ojson tools);
// The common end of the chat endpoints (chat completions, messages, responses): renders the
// conversation with `co` into g.prompt (a rendering error is a 400 naming `param`), applies the
// request's common fields (finish_request) and its tool_choice (a required tool call is forced:
// see openai.cc for how and why). Returns the options to start the Run with.
RunOptions prepare_chat_request(Ctx& ctx, const json& body, const ojson& messages,
                                const api::ChatOptions& co, const ToolChoice& tc, GenRequest& g,
                                const char* param);

}  // namespace dsv4::server
