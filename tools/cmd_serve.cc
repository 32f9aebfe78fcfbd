// dsv4 serve: OpenAI- and Anthropic-compatible HTTP server with continuous batching.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "command.h"
#include "gen_common.h"
#include "server/server.h"

namespace dsv4::cli {
namespace {

server::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server) g_server->stop();
}

int run_serve(int argc, char** argv) {
  CLI::App app{
      "OpenAI (chat/completions, completions, responses) and Anthropic (messages) "
      "compatible HTTP server with continuous batching",
      "dsv4 serve"};
  server::ServerOptions o;
  app.add_option("-m,--model", o.model_dir,
                 "model directory (config.json, safetensors, tokenizer.json)")
      ->required();
  app.add_option("--host", o.host, "address to bind (default 127.0.0.1)");
  app.add_option("--port", o.port, "port (0: pick a free one and print it)");
  // Caps like -t's: every slot may get an HTTP thread, and a typo must not start 10^5 threads.
  app.add_option("--parallel", o.n_parallel, "-np N: sequences decoded together (default 4)")
      ->check(CLI::Range(1, 1024));
  app.add_option("-c,--ctx-size", o.n_ctx,
                 "context per sequence in tokens (0: model maximum; default 4096)");
  add_thread_options(app, o.threads, o.pin);
  add_expert_prefetch_option(app, o.expert_prefetch);
  app.add_option("--threads-http", o.http_threads,
                 "HTTP worker threads (default: np + queue + 16, at least 32)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--api-key", o.api_key,
                 "require this key (Authorization: Bearer KEY or x-api-key)");
  app.add_option("-a,--alias", o.alias,
                 "model id reported by the API (default: the directory name)");
  app.add_option("--timeout", o.timeout_s,
                 "per-request time limit in seconds (0: none; default 600)")
      ->check(AtLeast(0));
  app.add_option("--queue", o.max_queue,
                 "requests that may wait for a slot before 503 (default 64)")
      ->check(CLI::Range(0, 4096));
  app.add_option("-b,--batch-size", o.prefill_budget,
                 "prompt tokens per batched step (default 512)")
      ->check(AtLeast(1));
  app.add_option("--prefill-chunk", o.prefill_chunk,
                 "prompt tokens per chunk of one sequence (default 256)")
      ->check(AtLeast(1));
  app.add_option("--max-body", o.max_body_bytes,
                 "largest accepted request body in bytes (default 8 MiB)")
      ->check(AtLeast(1));
  app.add_option("-n,--n-predict", o.max_tokens_limit,
                 "cap on generated tokens per request (0: none)")
      ->check(AtLeast(0));
  app.add_flag("--thinking", o.default_thinking, "thinking mode unless a request says otherwise");
  app.add_flag("--test-hooks", o.test_hooks,
               "testing only: honour the dsv4_force_output request field")
      ->group("");
  app.add_flag("-v,--verbose", o.verbose, "log requests");
  // llama-server spells the slot count "-np"; CLI11 only takes one-letter short names.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) {
    std::string a = argv[i];
    if (a == "-np")
      a = "--parallel";
    else if (a.rfind("-np=", 0) == 0)
      a = "--parallel=" + a.substr(4);
    args.push_back(a);
  }
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::signal(SIGPIPE, SIG_IGN);
  server::Server srv(o);
  g_server = &srv;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const int rc = srv.run();
  g_server = nullptr;
  return rc;
}

}  // namespace

DSV4_COMMAND("serve", "OpenAI/Anthropic-compatible HTTP server with continuous batching",
             run_serve);

}  // namespace dsv4::cli
