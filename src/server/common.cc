#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>
#include <thread>

#include "server/server_internal.h"
#include "util/error.h"

namespace dsv4::server {

// ---- Errors -----------------------------------------------------------------------------------

std::string error_type_for(int status) {
  switch (status) {
    case 400:
    case 404:
    case 405:
    case 413:
    case 422:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 408:
    case 504:
      return "timeout_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "overloaded_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

ojson error_body(int status, const std::string& message, const std::string& param,
                 const std::string& type, const std::string& code) {
  ojson e;
  e["message"] = message;
  e["type"] = type.empty() ? error_type_for(status) : type;
  e["param"] = param.empty() ? ojson(nullptr) : ojson(param);
  e["code"] = code.empty() ? ojson(nullptr) : ojson(code);
  ojson body;
  body["error"] = std::move(e);
  return body;
}

void send_error(httplib::Response& res, const ApiError& e, bool anthropic) {
  res.status = e.status;
  ojson body;
  if (anthropic) body["type"] = "error";
  ojson b = error_body(e.status, e.what(), e.param, e.type, e.code);
  body["error"] = b["error"];
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  if (e.status == 503) res.set_header("Retry-After", "1");
}

// ---- Field readers ----------------------------------------------------------------------------

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

static std::string range_str(double lo, double hi) {
  auto f = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  return "[" + f(lo) + ", " + f(hi) + "]";
}

double get_number(const json& body, const char* key, double lo, double hi, double def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number()) throw ApiError(400, std::string("'") + key + "' must be a number", key);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw ApiError(400, std::string("'") + key + "' must be in " + range_str(lo, hi), key);
  return x;
}

int64_t get_int(const json& body, const char* key, int64_t lo, int64_t hi, int64_t def) {
  const json* v = field(body, key);
  if (!v) return def;
  int64_t x = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      throw ApiError(400, std::string("'") + key + "' is too large", key);
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::isfinite(v->get<double>()) &&
             v->get<double>() == std::floor(v->get<double>()) &&
             std::fabs(v->get<double>()) < 9e15) {
    x = static_cast<int64_t>(v->get<double>());
  } else {
    throw ApiError(400, std::string("'") + key + "' must be an integer", key);
  }
  if (x < lo || x > hi)
    throw ApiError(400,
                   std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got " + std::to_string(x),
                   key);
  return x;
}

bool get_bool(const json& body, const char* key, bool def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_boolean()) throw ApiError(400, std::string("'") + key + "' must be a boolean", key);
  return v->get<bool>();
}

std::string get_string(const json& body, const char* key, const std::string& def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_string()) throw ApiError(400, std::string("'") + key + "' must be a string", key);
  return v->get<std::string>();
}

std::string get_string_in(const json& obj, const char* key, const std::string& def,
                          const std::string& where, const std::string& param) {
  const json* v = field(obj, key);
  if (!v) return def;
  if (!v->is_string()) throw ApiError(400, where + "." + key + " must be a string", param);
  return v->get<std::string>();
}

std::vector<std::string> get_stops(const json& body, const char* key) {
  std::vector<std::string> out;
  const json* v = field(body, key);
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 16)
      throw ApiError(400, std::string("'") + key + "' has more than 16 entries", key);
    for (const auto& s : *v) {
      if (!s.is_string())
        throw ApiError(400, std::string("'") + key + "' must be a string or a list of strings",
                       key);
      out.push_back(s.get<std::string>());
    }
  } else {
    throw ApiError(400, std::string("'") + key + "' must be a string or a list of strings", key);
  }
  for (auto& s : out)
    if (s.size() > 1024)
      throw ApiError(400, std::string("'") + key + "' entry longer than 1024 bytes", key);
  out.erase(std::remove_if(out.begin(), out.end(), [](const std::string& s) { return s.empty(); }),
            out.end());
  return out;
}

json parse_body(const httplib::Request& req) {
  json body;
  try {
    body = json::parse(req.body);
  } catch (const std::exception& e) {
    throw ApiError(400, std::string("request body is not valid JSON: ") + printable(e.what()));
  }
  if (!body.is_object()) throw ApiError(400, "request body must be a JSON object");
  return body;
}

void read_sampling(const json& body, SamplingParams& sp) {
  sp.temperature = static_cast<float>(get_number(body, "temperature", 0, 2, 1.0));
  sp.top_p = static_cast<float>(get_number(body, "top_p", 0, 1, 1.0));
  if (sp.top_p <= 0) throw ApiError(400, "'top_p' must be in (0, 1]", "top_p");
  sp.top_k = static_cast<int>(get_int(body, "top_k", 0, 1 << 30, 0));
  sp.min_p = static_cast<float>(get_number(body, "min_p", 0, 1, 0));
  sp.presence_penalty = static_cast<float>(get_number(body, "presence_penalty", -2, 2, 0));
  sp.frequency_penalty = static_cast<float>(get_number(body, "frequency_penalty", -2, 2, 0));
  sp.repeat_penalty = static_cast<float>(get_number(
      body, "repetition_penalty", 0.01, 10, get_number(body, "repeat_penalty", 0.01, 10, 1)));
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer()) throw ApiError(400, "'seed' must be an integer", "seed");
    sp.seed =
        s->is_number_unsigned() ? s->get<uint64_t>() : static_cast<uint64_t>(s->get<int64_t>());
    if (sp.seed == 0xFFFFFFFFFFFFFFFFull) sp.seed = 0xFFFFFFFFFFFFFFFEull;
  }
}

std::string random_id(const std::string& prefix, size_t n_hex) {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^
                                          std::hash<std::thread::id>{}(std::this_thread::get_id())};
  static const char* hex = "0123456789abcdef";
  std::string s = prefix;
  for (size_t i = 0; i < n_hex; ++i) s += hex[rng() & 15];
  return s;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

static std::string valid_utf8(std::string_view s) {
  // Replace bytes that do not form valid UTF-8 with U+FFFD (json dump would throw otherwise).
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string token_text(const tok::Tokenizer& tok, int32_t id) {
  return valid_utf8(tok.token_bytes(id));
}

ojson openai_logprobs(const tok::Tokenizer& tok, const std::vector<LogprobEntry>& lp) {
  ojson content = ojson::array();
  auto bytes_of = [&](int32_t id) {
    ojson b = ojson::array();
    for (unsigned char c : tok.token_bytes(id)) b.push_back(static_cast<int>(c));
    return b;
  };
  for (const auto& e : lp) {
    ojson o;
    o["token"] = token_text(tok, e.token);
    o["logprob"] = e.logprob;
    o["bytes"] = bytes_of(e.token);
    ojson top = ojson::array();
    for (const auto& t : e.top) {
      ojson x;
      x["token"] = token_text(tok, t.token);
      x["logprob"] = t.logprob;
      x["bytes"] = bytes_of(t.token);
      top.push_back(std::move(x));
    }
    o["top_logprobs"] = std::move(top);
    content.push_back(std::move(o));
  }
  ojson r;
  r["content"] = std::move(content);
  r["refusal"] = nullptr;
  return r;
}

void finish_request(Ctx& ctx, const json& body, GenRequest& req) {
  req.timeout_s = ctx.opts.timeout_s;
  if (ctx.opts.test_hooks) {
    if (const json* f = field(body, "dsv4_force_output")) {
      if (!f->is_string())
        throw ApiError(400, "'dsv4_force_output' must be a string", "dsv4_force_output");
      req.force = true;
      req.forced = ctx.tok->encode(f->get<std::string>());
    }
  }
  if (ctx.opts.max_tokens_limit > 0 &&
      (req.gen.max_tokens < 0 || req.gen.max_tokens > ctx.opts.max_tokens_limit))
    req.gen.max_tokens = ctx.opts.max_tokens_limit;
  const int64_t n_ctx = ctx.sched->n_ctx();
  if (static_cast<int64_t>(req.prompt.size()) >= n_ctx) {
    throw ApiError(400,
                   "the prompt is " + std::to_string(req.prompt.size()) +
                       " tokens, which exceeds the context limit of " + std::to_string(n_ctx) +
                       " tokens per sequence (at least one token must remain for the reply)",
                   "messages", "invalid_request_error", "context_length_exceeded");
  }
}

// ---- Run ----------------------------------------------------------------------------------------

static api::OutputParserOptions parser_opts(const RunOptions& o) {
  api::OutputParserOptions p;
  p.thinking = o.thinking;
  p.tool_call_forced = o.tool_call_forced;
  const std::string base = random_id("call_", 24);
  p.make_tool_call_id = [base](size_t n) { return n == 0 ? base : base + "_" + std::to_string(n); };
  return p;
}

Run::Run(Ctx& ctx, GenRequest req, RunOptions opts)
    : ctx_(ctx), opts_(opts), parser_(parser_opts(opts)) {
  prompt_tokens_ = static_cast<int64_t>(req.prompt.size());
  stops_ = req.gen.stop;
  req.gen.on_stop_string = [index = stop_index_](size_t i) { index->store(static_cast<int>(i)); };
  want_lp_ = req.logprobs >= 0;
  if (opts.parse && opts.tool_call_forced) {
    // The reply is the forced block, so generation ends with it: once the block has closed (the
    // format allows only end-of-sentence after it), or once it can no longer parse (everything
    // after that is dropped, see OutputParserOptions::tool_call_forced). Going on would only
    // hold the slot, up to the token limit when the model does not stop. A parser of its own on
    // the scheduler's thread (this Run's is fed later, on the HTTP thread) sees the same text and
    // so stops where this one ends the block; its calls are reported only once the block ended.
    api::OutputParserOptions po;
    po.thinking = opts.thinking;
    po.tool_call_forced = true;
    auto watch = std::make_shared<api::OutputParser>(std::move(po));
    req.gen.halt = [watch](std::string_view text) {
      watch->push(text);
      return !watch->message().tool_calls.empty() || watch->message().tool_calls_incomplete;
    };
  }
  try {
    h_ = ctx.sched->submit(std::move(req));
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  if (!h_) {
    ctx.metrics.requests_rejected++;
    throw ApiError(503, "server is busy: all " + std::to_string(ctx.opts.n_parallel) +
                            " sequences are in use and the queue is full; retry later");
  }
}

Run::~Run() {
  if (!finished_ && h_) h_->cancel();
}

void Run::cancel() {
  if (h_) h_->cancel();
}

std::string strip_dsml(std::string s) {
  // The parser never emits DSML markup from well-formed blocks; markup of a malformed block is
  // returned as text. Clients must never see the DSML marker, so it is removed from such text.
  const std::string_view m = api::kDsml;
  for (size_t at; (at = s.find(m)) != std::string::npos;) s.erase(at, m.size());
  return s;
}

void Run::handle_parser_events(std::vector<api::OutputEvent>& evs, std::vector<RunEvent>& out) {
  for (auto& e : evs) {
    RunEvent r;
    switch (e.type) {
      case api::OutputEvent::Type::kReasoningDelta:
        r.type = RunEvent::Type::kReasoning;
        r.text = strip_dsml(std::move(e.text));
        if (!r.text.empty()) out.push_back(std::move(r));
        break;
      case api::OutputEvent::Type::kContentDelta:
        r.type = RunEvent::Type::kContent;
        r.text = strip_dsml(std::move(e.text));
        if (!r.text.empty()) out.push_back(std::move(r));
        break;
      case api::OutputEvent::Type::kToolCallStart:
        r.type = RunEvent::Type::kToolCall;
        r.tool_index = e.tool_index;
        r.tool_id = e.tool_id;
        r.tool_name = e.tool_name;
        out.push_back(std::move(r));
        break;
      case api::OutputEvent::Type::kToolCallArguments:
        // Attach the arguments to the start event just emitted for the same call (the parser
        // releases a whole block at once), else emit as its own event.
        for (auto it = out.rbegin(); it != out.rend(); ++it) {
          if (it->type == RunEvent::Type::kToolCall && it->tool_index == e.tool_index) {
            it->tool_args = e.text;
            goto next;
          }
        }
        r.type = RunEvent::Type::kToolCall;
        r.tool_index = e.tool_index;
        r.tool_args = e.text;
        out.push_back(std::move(r));
      next:
        break;
    }
  }
}

bool Run::poll(std::vector<RunEvent>& out, std::chrono::milliseconds wait) {
  if (finished_) return true;
  GenEvent ev;
  bool first = true;
  while (h_->next(ev, first ? wait : std::chrono::milliseconds(0))) {
    first = false;
    if (ev.kind == GenEvent::Kind::kToken) {
      if (ev.token >= 0 && want_lp_)
        pending_lp_.push_back(
            {{ev.token, ev.logprob, std::move(ev.top)}, raw_.size(), raw_.size() + ev.text.size()});
      if (!ev.text.empty()) {
        raw_ += ev.text;
        if (opts_.parse) {
          auto pe = parser_.push(ev.text);
          handle_parser_events(pe, out);
        } else {
          RunEvent r;
          r.type = RunEvent::Type::kContent;
          r.text = ev.text;
          out.push_back(std::move(r));
        }
      }
    } else {
      done_ = ev;
      finished_ = true;
      completion_tokens_ = ev.gen_tokens;
      if (opts_.parse) {
        auto pe = parser_.finish();
        handle_parser_events(pe, out);
      }
      settle_logprobs();
      ctx_.metrics.prompt_tokens += static_cast<uint64_t>(prompt_tokens_);
      ctx_.metrics.completion_tokens += static_cast<uint64_t>(completion_tokens_);
      return true;
    }
  }
  settle_logprobs();
  return false;
}

// OpenAI reports logprobs for message content only: `logprobs.content` is "a list of message
// content tokens", and a reply that is a tool call comes without logprobs for the call. So the
// tokens of a tool call (forced or not) get no entries here; their logits may not even have been
// computed (the forced opener rides in the forward pass of the token before it), and reporting
// the model-written tokens between the forced ones would be a partial, misleading list. A token
// belongs where its first byte went; one with no text of its own (EOS after a call, a piece held
// back) belongs with the text before it. Entries wait until the parser has decided that place,
// so streamed chunks carry exactly the entries the whole reply would.
void Run::settle_logprobs() {
  const size_t settled = opts_.parse ? parser_.settled() : raw_.size();
  while (!pending_lp_.empty()) {
    PendingLogprob& p = pending_lp_.front();
    const bool textless = p.begin == p.end;
    if (textless ? p.begin > settled : p.begin >= settled) break;
    bool in_call = false;
    for (const auto& [b, e] : parser_.tool_call_spans())
      in_call = in_call || (textless ? p.begin > b && p.begin <= e : p.begin >= b && p.begin < e);
    if (!in_call) logprobs_.push_back(std::move(p.entry));
    pending_lp_.pop_front();
  }
}

std::vector<LogprobEntry> Run::take_logprobs() {
  std::vector<LogprobEntry> r;
  r.swap(logprobs_);
  return r;
}

void Run::check_failure() const {
  if (!finished_) return;
  if (done_.timed_out)
    throw ApiError(504,
                   "the request ran past the server's time limit of " +
                       std::to_string(static_cast<int64_t>(ctx_.opts.timeout_s)) + " s",
                   "", "timeout_error", "timeout");
  if (!done_.error.empty()) throw ApiError(500, done_.error, "", "server_error");
}

bool Run::cut_off() const {
  return done_.stop == StopReason::kMaxTokens || done_.stop == StopReason::kContextFull;
}

bool Run::ended_with_tool_calls() const {
  return has_tool_calls() && !(cut_off() && parser_.message().tool_calls_incomplete);
}

std::string Run::finish_reason() const {
  if (ended_with_tool_calls()) return "tool_calls";
  return cut_off() ? "length" : "stop";
}

std::string Run::stop_sequence() const {
  if (done_.stop != StopReason::kStopString) return "";
  const int i = stop_index_->load();
  return i >= 0 && static_cast<size_t>(i) < stops_.size() ? stops_[static_cast<size_t>(i)] : "";
}

// ---- Client liveness --------------------------------------------------------------------------

// The socket of the request's connection. httplib 0.11 gives handlers no access to it, and what
// it offers instead cannot see a client that went away without a write: DataSink::is_writable()
// only polls for POLLOUT, which a socket whose peer has closed still reports. (A chunked content
// provider would also commit the 200 status and headers before the reply is known, losing the
// 504/500 answers, and change the framing.) So the socket is found among the process's
// descriptors by its address pair, which is unique while the handler runs (httplib closes it only
// after the handler returns). -1 if not found (no /proc): the request is then not watched.
static int find_client_socket(const httplib::Request& req) {
  auto endpoint = [](const sockaddr_storage& ss, socklen_t len, std::string& host, int& port) {
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, h, sizeof h, p, sizeof p,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      return false;
    host = h;
    port = std::atoi(p);
    return true;
  };
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0)
      continue;
    std::string lh, ph;
    int lp = -1, pp = -1;
    if (endpoint(local, ll, lh, lp) && endpoint(peer, pl, ph, pp) && lp == req.local_port &&
        pp == req.remote_port && lh == req.local_addr && ph == req.remote_addr) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// True once the peer has closed or reset the connection. A client that sent its request has
// nothing more to send, so a pending end of stream means it is gone (this is also how later
// httplib versions define a live socket); unread bytes (a pipelined request) mean it is still
// there.
static bool client_gone(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  return false;
}

void wait_for_reply(const httplib::Request& req, Run& run) {
  std::vector<RunEvent> ignore;
  int fd = -2;  // looked up once the reply is not there at the first poll
  while (!run.poll(ignore, std::chrono::milliseconds(100))) {
    ignore.clear();
    if (fd == -2) fd = find_client_socket(req);
    if (fd >= 0 && client_gone(fd)) {
      run.cancel();
      throw ApiError(499, "the client closed the connection before the reply was ready");
    }
  }
}

// ---- SSE --------------------------------------------------------------------------------------

std::string sse_data(const ojson& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string sse_event(const std::string& event, const ojson& j) {
  return "event: " + event + "\ndata: " + j.dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n\n";
}

void stream_sse(httplib::Response& res, std::shared_ptr<Run> run,
                std::function<bool(std::string& out)> step) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto done = std::make_shared<bool>(false);
  auto last_write =
      std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  res.set_chunked_content_provider(
      "text/event-stream",
      [run, step, done, last_write](size_t, httplib::DataSink& sink) -> bool {
        if (*done) {
          sink.done();
          return true;
        }
        std::string out;
        bool more = true;
        try {
          more = step(out);
        } catch (const std::exception& e) {
          ApiError ae(500, e.what());
          if (auto* a = dynamic_cast<const ApiError*>(&e)) ae = *a;
          out += sse_data(error_body(ae.status, ae.what(), ae.param, ae.type, ae.code));
          more = false;
        }
        const auto now = std::chrono::steady_clock::now();
        if (out.empty() && more && now - *last_write > std::chrono::seconds(2)) {
          // Nothing written for 2 s (queued, long prefill): an SSE comment lets a vanished
          // client be noticed, so its sequence is freed.
          out = ": keep-alive\n\n";
        }
        if (!out.empty()) *last_write = now;
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          run->cancel();
          return false;
        }
        if (!more) {
          *done = true;
          sink.done();
        }
        return true;
      },
      [run](bool success) {
        if (!success || !run->finished()) run->cancel();
      });
}

}  // namespace dsv4::server
