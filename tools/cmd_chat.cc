// `dsv4 chat`: interactive multi-turn conversation that keeps the model state between turns.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api/chat_encoder.h"
#include "command.h"
#include "gen_common.h"
#include "runtime/chat_session.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

std::atomic<bool> g_interrupt{false};
void on_sigint(int) { g_interrupt.store(true); }

const char* kHelp =
    "commands:\n"
    "  /think            thinking mode (the model reasons before answering)\n"
    "  /nothink          chat mode without reasoning\n"
    "  /effort max|high  reasoning effort (max prepends DeepSeek's maximum-effort instruction)\n"
    "  /system TEXT      set the system prompt (empty: remove it)\n"
    "  /reset            forget the conversation (keeps the system prompt)\n"
    "  /save FILE        save the conversation as JSON\n"
    "  /load FILE        load a conversation saved with /save\n"
    "  /ctx              tokens in the context / context size\n"
    "  /quit             leave (also Ctrl-D)\n"
    "input: end a line with \\ to continue it, or wrap several lines in \"\"\" … \"\"\".\n"
    "Ctrl-C stops the current reply.\n";

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Reads one message (possibly multi-line). Returns false at end of input.
bool read_message(std::string* out, bool tty) {
  out->clear();
  std::string line;
  if (tty) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
  }
  if (!std::getline(std::cin, line)) return false;
  if (trim(line) == "\"\"\"") {
    while (std::getline(std::cin, line)) {
      if (trim(line) == "\"\"\"") return true;
      if (!out->empty()) *out += "\n";
      *out += line;
    }
    return true;
  }
  while (!line.empty() && line.back() == '\\') {
    line.pop_back();
    *out += line + "\n";
    if (tty) {
      std::fputs(". ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) return true;
  }
  *out += line;
  return true;
}

int chat_main(int argc, char** argv) {
  CLI::App app{
      "Interactive chat with a DeepSeek-V4 checkpoint. The model state is kept between turns: only "
      "the new turn is prefilled. Type /help for commands.",
      "dsv4 chat"};
  GenFlags f;
  f.add_to(app, true);
  std::string system, effort = "high";
  bool think = false, no_think = false;
  app.add_option("--system", system, "system prompt");
  auto* th = app.add_flag("--think", think, "start in thinking mode");
  app.add_flag("--no-think", no_think, "start in chat mode (default)")->excludes(th);
  app.add_option("--reasoning-effort", effort, "high (default) or max")
      ->check(CLI::IsMember({"high", "max"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  f.finish();
  if (!system.empty()) require_utf8(system, "--system");
  Loaded L = load_all(f, true);
  const Model& model = *L.model;
  const tok::Tokenizer& tk = *L.tokenizer;
  ThreadPool pool(f.threads, f.pin);
  Sampler sampler(f.sampling, model.config().vocab_size);
  ChatSession chat(model, pool, tk, L.n_ctx);
  chat.prefill_chunk = f.batch;
  chat.options().thinking = think;
  chat.options().reasoning_effort =
      effort == "max" ? api::ReasoningEffort::kMax : api::ReasoningEffort::kHigh;
  if (!system.empty()) chat.set_system(system);

  GenerationParams gp;
  gp.max_tokens = f.n_predict;
  gp.prefill_chunk = f.batch;
  gp.stop = f.stop;
  gp.ignore_eos = f.ignore_eos;

  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);

  const bool in_tty = ::isatty(0) == 1;
  const bool out_tty = stdout_is_tty();
  std::fprintf(stderr, "dsv4 chat: loaded %s in %.2f s, context %lld tokens. /help for commands.\n",
               f.model_dir.c_str(), L.load_s, static_cast<long long>(L.n_ctx));
  const int32_t think_end = tk.token_id("</think>");

  std::string msg;
  while (true) {
    g_interrupt.store(false);
    if (!read_message(&msg, in_tty)) break;
    if (g_interrupt.exchange(false) && in_tty)
      std::fputs("(Ctrl-C: type /quit to leave)\n", stderr);
    std::string t = trim(msg);
    if (t.empty()) continue;
    if (t[0] == '/') {
      std::string cmd = t.substr(0, t.find(' '));
      std::string arg = t.size() > cmd.size() ? trim(t.substr(cmd.size())) : "";
      try {
        if (cmd == "/quit" || cmd == "/exit") break;
        if (cmd == "/help") {
          std::fputs(kHelp, stderr);
        } else if (cmd == "/think") {
          chat.options().thinking = true;
          std::fputs("thinking mode on\n", stderr);
        } else if (cmd == "/nothink") {
          chat.options().thinking = false;
          std::fputs("thinking mode off\n", stderr);
        } else if (cmd == "/effort") {
          if (arg != "max" && arg != "high") throw Error("/effort takes max or high");
          chat.options().reasoning_effort =
              arg == "max" ? api::ReasoningEffort::kMax : api::ReasoningEffort::kHigh;
          std::fprintf(stderr, "reasoning effort: %s%s\n", arg.c_str(),
                       chat.options().thinking ? "" : " (takes effect in thinking mode: /think)");
        } else if (cmd == "/system") {
          require_utf8(arg, "system prompt");
          chat.set_system(arg);
          std::fputs(arg.empty() ? "system prompt removed\n" : "system prompt set\n", stderr);
        } else if (cmd == "/reset") {
          chat.reset(true);
          std::fputs("conversation cleared\n", stderr);
        } else if (cmd == "/ctx") {
          std::fprintf(stderr, "context: %lld / %lld tokens\n", static_cast<long long>(chat.used()),
                       static_cast<long long>(chat.n_ctx()));
        } else if (cmd == "/save") {
          if (arg.empty()) throw Error("/save needs a file name");
          nlohmann::ordered_json j;
          j["messages"] = chat.messages();
          j["thinking"] = chat.options().thinking;
          j["reasoning_effort"] =
              chat.options().reasoning_effort == api::ReasoningEffort::kMax ? "max" : "high";
          std::ofstream out(arg);
          if (!out) throw Error("cannot write " + arg);
          out << j.dump(2) << "\n";
          if (!out) throw Error("cannot write " + arg);
          std::fprintf(stderr, "saved %zu messages to %s\n", chat.messages().size(), arg.c_str());
        } else if (cmd == "/load") {
          if (arg.empty()) throw Error("/load needs a file name");
          std::ifstream in(arg);
          if (!in) throw Error("cannot read " + arg);
          nlohmann::ordered_json j;
          try {
            j = nlohmann::ordered_json::parse(in);
          } catch (const std::exception& e) {
            throw Error(arg + ": not valid JSON: " + e.what());
          }
          api::ojson msgs = j.is_object() && j.contains("messages") ? j["messages"] : j;
          if (!msgs.is_array())
            throw Error(arg + ": expected {\"messages\": [...]} or a message list");
          api::render_chat(msgs, chat.options());  // validates
          chat.messages() = msgs;
          if (j.is_object() && j.contains("thinking") && j["thinking"].is_boolean())
            chat.options().thinking = j["thinking"];
          if (j.is_object() && j.value("reasoning_effort", "") == "max")
            chat.options().reasoning_effort = api::ReasoningEffort::kMax;
          std::fprintf(stderr, "loaded %zu messages from %s (prefilled with the next turn)\n",
                       msgs.size(), arg.c_str());
        } else {
          std::fprintf(stderr, "unknown command %s (/help lists them)\n", cmd.c_str());
        }
      } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
      }
      continue;
    }
    // A conversation turn.
    try {
      require_utf8(t, "input");
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      continue;
    }
    bool in_reasoning = chat.options().thinking;
    if (in_reasoning) std::fputs(out_tty ? "\033[2m" : "<think>\n", stdout);
    ProgressBar bar(f.progress || stderr_is_tty(), "prompt", false, f.progress ? 0.0 : 2.0);
    GenerationCallbacks cb;
    cb.interrupt = &g_interrupt;
    cb.on_prefill_progress = [&](int64_t d, int64_t total) {
      bar.update(d, total);
      if (d == total) bar.finish();
    };
    cb.on_token = [&](int32_t token, const std::string& text, const float*) {
      if (in_reasoning && token == think_end) {
        in_reasoning = false;
        std::fputs(out_tty ? "\033[0m\n" : "\n</think>\n", stdout);
      }
      if (!text.empty()) std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
    try {
      ChatSession::Turn turn = chat.say(msg, sampler, gp, cb);
      bar.finish();
      if (in_reasoning && out_tty) std::fputs("\033[0m", stdout);
      std::fputs("\n", stdout);
      std::fflush(stdout);
      if (turn.gen.stop == StopReason::kInterrupted) std::fputs("[interrupted]\n", stderr);
      if (turn.gen.stop == StopReason::kContextFull) {
        std::fprintf(stderr, "[context full: %lld tokens; /reset to start over]\n",
                     static_cast<long long>(chat.n_ctx()));
      }
      const double pt = turn.prefill_s > 0 ? turn.prefilled_tokens / turn.prefill_s : 0;
      std::fprintf(
          stderr,
          "[prompt %lld new + %lld reused tokens, %.1f tok/s; reply %lld tokens, %.1f tok/s; "
          "context %lld / %lld]\n",
          static_cast<long long>(turn.prefilled_tokens), static_cast<long long>(turn.reused_tokens),
          pt, static_cast<long long>(turn.gen.timings.gen_tokens), turn.gen.timings.gen_tok_s(),
          static_cast<long long>(chat.used()), static_cast<long long>(chat.n_ctx()));
    } catch (const Error& e) {
      bar.finish();
      std::fputs("\n", stdout);
      std::fflush(stdout);
      std::fprintf(stderr, "error: %s\n", e.what());
      // Drop the user message that could not be answered.
      auto& m = chat.messages();
      if (!m.empty() && m.back().value("role", "") == "user") m.erase(m.end() - 1);
    }
  }
  if (out_tty) std::fputs("\n", stdout);
  return 0;
}

}  // namespace

DSV4_COMMAND("chat", "interactive multi-turn chat (-m DIR)", chat_main);

}  // namespace dsv4::cli
