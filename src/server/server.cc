// Server wiring: HTTP routes, auth, limits, errors, health/models/tokenize/metrics, model loading.
#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "server/server_internal.h"
#include "util/error.h"

namespace dsv4::server {

struct Server::Impl {
  Ctx ctx;
  httplib::Server http;
  std::thread loader;
};

Server::Server(ServerOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->ctx.opts = std::move(opts);
}

Server::~Server() {
  stop();
  if (impl_->loader.joinable()) impl_->loader.join();
  impl_->ctx.sched.reset();  // stops the worker before the model goes away
}

void Server::stop() { impl_->http.stop(); }

static void load_model(Ctx& ctx) {
  try {
    const ServerOptions& o = ctx.opts;
    ctx.tok = std::make_unique<tok::Tokenizer>(tok::Tokenizer::load(o.model_dir));
    ctx.vocab = std::make_shared<const VocabIndex>(*ctx.tok);
    ModelOptions mo;
    mo.expert_prefetch = o.expert_prefetch;
    ctx.model = Model::load(o.model_dir, mo);
    ctx.pool = std::make_unique<ThreadPool>(o.threads, o.pin);
    SchedulerOptions so;
    so.n_parallel = o.n_parallel;
    so.n_ctx = o.n_ctx;
    so.prefill_chunk = o.prefill_chunk;
    so.prefill_budget = o.prefill_budget;
    so.max_queue = o.max_queue;
    ctx.sched = std::make_unique<Scheduler>(*ctx.model, ctx.tok.get(), *ctx.pool, so);
    ctx.created = unix_now();
    ctx.ready = true;
    std::fprintf(stderr,
                 "dsv4 serve: model loaded (%s), %d parallel sequences × %lld tokens, %d threads\n",
                 ctx.model_id.c_str(), o.n_parallel, static_cast<long long>(ctx.sched->n_ctx()),
                 ctx.pool->size());
  } catch (const std::exception& e) {
    ctx.load_error = e.what();
    std::fprintf(stderr, "dsv4 serve: error loading the model: %s\n", e.what());
  }
}

static std::string metrics_text(Ctx& ctx) {
  std::ostringstream o;
  o.precision(15);
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
      << name << " " << v << "\n";
  };
  const Metrics& m = ctx.metrics;
  SchedulerStats s;
  if (ctx.sched) s = ctx.sched->stats();
  metric("dsv4_requests_total", "counter", "HTTP requests received on the generation endpoints",
         static_cast<double>(m.requests.load()));
  o << "# HELP dsv4_requests_by_endpoint_total Generation requests per endpoint\n"
    << "# TYPE dsv4_requests_by_endpoint_total counter\n"
    << "dsv4_requests_by_endpoint_total{endpoint=\"chat_completions\"} " << m.chat.load() << "\n"
    << "dsv4_requests_by_endpoint_total{endpoint=\"completions\"} " << m.completions.load() << "\n"
    << "dsv4_requests_by_endpoint_total{endpoint=\"responses\"} " << m.responses.load() << "\n"
    << "dsv4_requests_by_endpoint_total{endpoint=\"messages\"} " << m.messages.load() << "\n";
  metric("dsv4_requests_success_total", "counter", "Generation requests answered with 2xx",
         static_cast<double>(m.requests_ok.load()));
  metric("dsv4_requests_error_total", "counter", "Generation requests answered with 4xx/5xx",
         static_cast<double>(m.requests_error.load()));
  metric("dsv4_requests_rejected_total", "counter", "Requests refused with 503 (queue full)",
         static_cast<double>(m.requests_rejected.load()));
  metric("dsv4_requests_cancelled_total", "counter", "Sequences freed because the client went away",
         static_cast<double>(s.requests_cancelled));
  metric("dsv4_requests_timed_out_total", "counter", "Sequences stopped by the request time limit",
         static_cast<double>(s.requests_timed_out));
  metric("dsv4_prompt_tokens_total", "counter", "Prompt tokens processed",
         static_cast<double>(s.prompt_tokens));
  metric("dsv4_tokens_predicted_total", "counter", "Tokens generated",
         static_cast<double>(s.gen_tokens));
  metric("dsv4_prompt_seconds_total", "counter", "Forward time spent on prompt tokens", s.prompt_s);
  metric("dsv4_tokens_predicted_seconds_total", "counter", "Forward time spent on generated tokens",
         s.gen_s);
  metric("dsv4_prompt_tokens_seconds", "gauge", "Average prompt throughput (tokens/s)",
         s.prompt_s > 0 ? static_cast<double>(s.prompt_tokens) / s.prompt_s : 0);
  metric("dsv4_predicted_tokens_seconds", "gauge", "Average generation throughput (tokens/s)",
         s.gen_s > 0 ? static_cast<double>(s.gen_tokens) / s.gen_s : 0);
  metric("dsv4_requests_processing", "gauge", "Active sequences (in slots)", s.active);
  metric("dsv4_requests_deferred", "gauge", "Requests waiting in the queue", s.queued);
  metric("dsv4_slots_total", "gauge", "Parallel sequences (-np)", s.n_parallel);
  metric("dsv4_kv_cache_bytes", "gauge", "KV/state memory held by active sequences",
         static_cast<double>(s.kv_bytes));
  metric("dsv4_batch_steps_total", "counter", "Batched forward steps",
         static_cast<double>(s.steps));
  metric("dsv4_batch_sequences_total", "counter", "Sum over steps of sequences per batch",
         static_cast<double>(s.batch_seqs));
  metric("dsv4_http_inflight", "gauge", "HTTP generation requests being handled",
         static_cast<double>(m.http_inflight.load()));
  return o.str();
}

// cpp-httplib 0.11 listens with a backlog of 5, so bursts of concurrent clients get their
// connections dropped and retried by the kernel (seconds of delay, or failures). The socket is
// private to httplib: find our listening socket by its port and listen() again with a large backlog
// (Linux allows changing the backlog of a listening socket this way).
static void raise_listen_backlog(int port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int acc = 0;
    socklen_t len = sizeof(acc);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc) continue;
    sockaddr_storage ss{};
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) continue;
    int p = -1;
    if (ss.ss_family == AF_INET)
      p = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
      p = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    if (p == port) ::listen(fd, SOMAXCONN);
  }
}

int Server::run(const std::function<void(int)>& on_listening) {
  Ctx& ctx = impl_->ctx;
  httplib::Server& http = impl_->http;
  const ServerOptions& o = ctx.opts;
  ctx.model_id = !o.alias.empty()
                     ? o.alias
                     : std::filesystem::path(o.model_dir).lexically_normal().filename().string();
  if (ctx.model_id.empty())
    ctx.model_id = std::filesystem::path(o.model_dir).parent_path().filename().string();
  if (ctx.model_id.empty()) ctx.model_id = "dsv4";

  const int http_threads =
      o.http_threads > 0 ? o.http_threads : std::max(32, o.n_parallel + o.max_queue + 16);
  http.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  http.set_payload_max_length(o.max_body_bytes);
  http.set_read_timeout(60, 0);
  http.set_write_timeout(60, 0);
  http.set_keep_alive_max_count(1000);

  http.set_pre_routing_handler([&ctx](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Access-Control-Allow-Origin", "*");
    if (req.method == "OPTIONS") {
      res.set_header("Access-Control-Allow-Headers", "*");
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.status = 204;
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!ctx.opts.api_key.empty() && req.path != "/health") {
      std::string key;
      const std::string auth = req.get_header_value("Authorization");
      if (auth.rfind("Bearer ", 0) == 0) key = auth.substr(7);
      if (key.empty()) key = req.get_header_value("x-api-key");
      if (key != ctx.opts.api_key) {
        send_error(
            res,
            ApiError(401,
                     key.empty() ? "missing API key (send Authorization: Bearer KEY or x-api-key)"
                                 : "invalid API key",
                     "", "authentication_error", "invalid_api_key"),
            req.path == "/v1/messages");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Bodies for errors httplib produces itself (404, 413, 400 on a bad request line...).
  http.set_error_handler([&ctx](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg;
    switch (res.status) {
      case 404:
        msg = "no such endpoint: " + req.method + " " + req.path;
        break;
      case 405:
        msg = "method not allowed";
        break;
      case 413:
        msg = "request body exceeds the limit of " + std::to_string(ctx.opts.max_body_bytes) +
              " bytes";
        break;
      case 414:
        msg = "request URI too long";
        break;
      default:
        msg = "HTTP error " + std::to_string(res.status);
        break;
    }
    send_error(res, ApiError(res.status, msg), req.path == "/v1/messages");
  });
  http.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string msg = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          msg = std::string("internal error: ") + e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, msg), req.path == "/v1/messages");
      });

  http.Get("/health", [&ctx](const httplib::Request&, httplib::Response& res) {
    if (ctx.ready) {
      res.set_content(R"({"status":"ok"})", "application/json");
    } else if (!ctx.load_error.empty()) {
      send_error(res, ApiError(500, "model failed to load: " + ctx.load_error));
    } else {
      send_error(res, ApiError(503, "loading model", "", "unavailable_error", "loading"));
    }
  });

  auto model_obj = [&ctx]() {
    ojson m;
    m["id"] = ctx.model_id;
    m["object"] = "model";
    m["created"] = ctx.created;
    m["owned_by"] = "dsv4";
    if (ctx.ready) {
      ojson meta;
      meta["n_ctx"] = ctx.sched->n_ctx();
      meta["n_parallel"] = ctx.opts.n_parallel;
      meta["n_vocab"] = ctx.model->config().vocab_size;
      m["meta"] = std::move(meta);
    }
    return m;
  };
  http.Get("/v1/models", [model_obj](const httplib::Request&, httplib::Response& res) {
    ojson r;
    r["object"] = "list";
    r["data"] = ojson::array({model_obj()});
    res.set_content(r.dump(), "application/json");
  });
  http.Get(R"(/v1/models/(.+))",
           [&ctx, model_obj](const httplib::Request& req, httplib::Response& res) {
             const std::string id = req.matches[1];
             if (id != ctx.model_id) {
               send_error(res, ApiError(404, "model '" + id + "' not found", "model",
                                        "invalid_request_error", "model_not_found"));
               return;
             }
             res.set_content(model_obj().dump(), "application/json");
           });
  http.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(ctx), "text/plain; version=0.0.4");
  });

  // Wraps a handler: readiness, ApiError → error JSON, counters.
  auto wrap = [&ctx](void (*fn)(Ctx&, const httplib::Request&, httplib::Response&), bool anthropic,
                     bool generation) {
    return [&ctx, fn, anthropic, generation](const httplib::Request& req, httplib::Response& res) {
      if (generation) {
        ctx.metrics.requests++;
        ctx.metrics.http_inflight++;
      }
      try {
        if (!ctx.ready)
          throw ApiError(503, "the model is still loading", "", "unavailable_error", "loading");
        fn(ctx, req, res);
        if (generation) ctx.metrics.requests_ok++;
      } catch (const ApiError& e) {
        if (generation) ctx.metrics.requests_error++;
        send_error(res, e, anthropic);
      } catch (const std::exception& e) {
        if (generation) ctx.metrics.requests_error++;
        send_error(res, ApiError(500, std::string("internal error: ") + e.what()), anthropic);
      }
      if (generation) ctx.metrics.http_inflight--;
    };
  };
  http.Post("/v1/chat/completions", wrap(handle_chat, false, true));
  http.Post("/chat/completions", wrap(handle_chat, false, true));
  http.Post("/v1/completions", wrap(handle_completions, false, true));
  http.Post("/completions", wrap(handle_completions, false, true));
  http.Post("/v1/responses", wrap(handle_responses, false, true));
  http.Post("/v1/messages", wrap(handle_messages, true, true));

  http.Post("/tokenize",
            wrap(
                [](Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
                  json body = parse_body(req);
                  const json* c = field(body, "content");
                  if (!c || !c->is_string())
                    throw ApiError(400, "'content' must be a string", "content");
                  const bool add_special = get_bool(body, "add_special", false);
                  const bool with_pieces = get_bool(body, "with_pieces", false);
                  std::vector<int32_t> ids;
                  try {
                    ids = ctx.tok->encode(c->get<std::string>());
                  } catch (const Error& e) {
                    throw ApiError(400, std::string("'content': ") + e.what(), "content");
                  }
                  if (add_special) ids.insert(ids.begin(), ctx.tok->bos_id());
                  ojson toks = ojson::array();
                  for (int32_t id : ids) {
                    if (with_pieces)
                      toks.push_back({{"id", id}, {"piece", token_text(*ctx.tok, id)}});
                    else
                      toks.push_back(id);
                  }
                  ojson r;
                  r["tokens"] = std::move(toks);
                  res.set_content(r.dump(), "application/json");
                },
                false, false));
  http.Post("/detokenize",
            wrap(
                [](Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
                  json body = parse_body(req);
                  const json* t = field(body, "tokens");
                  if (!t || !t->is_array())
                    throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
                  std::vector<int32_t> ids;
                  for (const auto& x : *t) {
                    if (!x.is_number_integer())
                      throw ApiError(400, "'tokens' must be a list of integers", "tokens");
                    const int64_t v = x.get<int64_t>();
                    if (v < 0 || v >= static_cast<int64_t>(ctx.tok->vocab_size()))
                      throw ApiError(400,
                                     "token id " + std::to_string(v) + " is outside the vocabulary",
                                     "tokens");
                    ids.push_back(static_cast<int32_t>(v));
                  }
                  ojson r;
                  try {
                    r["content"] = ctx.tok->decode(ids);
                  } catch (const Error& e) {
                    throw ApiError(400, e.what(), "tokens");
                  }
                  res.set_content(r.dump(-1, ' ', false, json::error_handler_t::replace),
                                  "application/json");
                },
                false, false));

  int port = o.port;
  if (port == 0) {
    port = http.bind_to_any_port(o.host);
    if (port <= 0) {
      std::fprintf(stderr, "dsv4 serve: cannot bind %s\n", o.host.c_str());
      return 1;
    }
  } else if (!http.bind_to_port(o.host, port)) {
    std::fprintf(stderr, "dsv4 serve: cannot bind %s:%d\n", o.host.c_str(), port);
    return 1;
  }
  raise_listen_backlog(port);
  std::fprintf(stderr, "dsv4 serve: listening on http://%s:%d\n", o.host.c_str(), port);
  std::printf("listening on http://%s:%d\n", o.host.c_str(), port);
  std::fflush(stdout);
  if (on_listening) on_listening(port);
  impl_->loader = std::thread([&ctx] { load_model(ctx); });
  const bool ok = http.listen_after_bind();
  return ok ? 0 : 1;
}

}  // namespace dsv4::server
