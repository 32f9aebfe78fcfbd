// `dsv4 run`: one prompt in, the streamed answer out (llama.cpp's llama-cli -p equivalent).
#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/chat_encoder.h"
#include "command.h"
#include "gen_common.h"
#include "util/error.h"

namespace dsv4::cli {
namespace {

std::atomic<bool> g_interrupt{false};
void on_sigint(int) {
  if (g_interrupt.exchange(true)) std::_Exit(130);  // second Ctrl-C: leave now
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  nlohmann::json j;
  std::string t = text;
  // Accept "1,2,3", "1 2 3", "[1, 2, 3]" and {"ids": [...]} / {"prompt_ids": [...]}.
  try {
    if (t.find_first_of("[{") != std::string::npos) {
      j = nlohmann::json::parse(t);
      if (j.is_object()) {
        if (j.contains("ids"))
          j = j["ids"];
        else if (j.contains("prompt_ids"))
          j = j["prompt_ids"];
        else
          throw Error(what + ": JSON object needs an \"ids\" or \"prompt_ids\" array");
      }
      if (!j.is_array()) throw Error(what + ": expected a JSON array of token ids");
      for (const auto& v : j) {
        if (!v.is_number_integer())
          throw Error(what + ": token ids must be integers, got " + v.dump());
        ids.push_back(v.get<int32_t>());
      }
      return ids;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": not valid JSON: " + e.what());
  }
  for (char& c : t)
    if (c == ',') c = ' ';
  std::istringstream in(t);
  std::string w;
  while (in >> w) {
    try {
      size_t used = 0;
      long v = std::stol(w, &used);
      if (used != w.size()) throw std::invalid_argument(w);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw Error(what + ": '" + w + "' is not a token id");
    }
  }
  return ids;
}

int run_main(int argc, char** argv) {
  CLI::App app{"Generate a reply to one prompt, streamed to stdout; timings go to stderr.",
               "dsv4 run"};
  GenFlags f;
  f.add_to(app, false);
  std::string prompt, prompt_file, system, effort = "high", prompt_ids, ids_file, output_json;
  bool think = false, no_think = false, raw = false;
  app.add_option("-p,--prompt", prompt,
                 "prompt text (rendered as one user turn of the V4 chat format)");
  app.add_option("-f,--file", prompt_file, "read the prompt from a file (UTF-8)");
  app.add_option("--system", system, "system prompt");
  auto* th = app.add_flag("--think", think,
                          "thinking mode: the model reasons first (shown dimmed, or between "
                          "<think> markers when piped)");
  app.add_flag("--no-think", no_think, "chat mode without reasoning (default)")->excludes(th);
  app.add_option("--reasoning-effort", effort,
                 "high (default) or max (thinking mode; max prepends DeepSeek's maximum-effort "
                 "instruction)")
      ->check(CLI::IsMember({"high", "max"}));
  app.add_flag("--raw", raw, "no chat template: feed the prompt text (or ids) as is");
  app.add_option("--prompt-ids", prompt_ids,
                 "prompt as token ids, e.g. \"0,1234,56\" (implies --raw)");
  app.add_option("--ids-file", ids_file,
                 "prompt token ids from a file: JSON array, {\"ids\": [...]}, or whitespace/comma "
                 "separated (implies --raw)");
  app.add_option(
      "--output-json", output_json,
      "also write prompt ids, generated ids, text, stop reason and timings to this JSON file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  f.finish();
  const int sources =
      !prompt.empty() + !prompt_file.empty() + !prompt_ids.empty() + !ids_file.empty();
  if (sources == 0)
    throw Error("no prompt: give -p TEXT, -f FILE, --prompt-ids IDS or --ids-file FILE");
  if (sources > 1) throw Error("give only one of -p, -f, --prompt-ids, --ids-file");
  const bool have_ids = !prompt_ids.empty() || !ids_file.empty();
  if (have_ids) raw = true;
  if (!prompt_file.empty()) prompt = read_prompt_file(prompt_file);
  if (!prompt.empty()) require_utf8(prompt, "prompt");

  Loaded L = load_all(f, !have_ids);
  const Model& model = *L.model;
  const tok::Tokenizer* tk = L.tokenizer ? &*L.tokenizer : nullptr;

  std::vector<int32_t> ids;
  bool thinking = false;
  if (have_ids) {
    std::string text = prompt_ids;
    if (!ids_file.empty()) {
      std::ifstream in(ids_file, std::ios::binary);
      if (!in) throw Error("cannot read ids file " + ids_file);
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    ids = parse_ids(text, ids_file.empty() ? "--prompt-ids" : ids_file);
  } else if (raw) {
    ids = tk->encode(prompt);
  } else {
    api::ojson msgs = api::ojson::array();
    if (!system.empty()) msgs.push_back({{"role", "system"}, {"content", system}});
    msgs.push_back({{"role", "user"}, {"content", prompt}});
    api::ChatOptions co;
    co.thinking = think;
    co.reasoning_effort =
        effort == "max" ? api::ReasoningEffort::kMax : api::ReasoningEffort::kHigh;
    ids = api::encode_chat(*tk, msgs, co);
    thinking = think;
  }
  if (ids.empty()) throw Error("the prompt is empty");

  ThreadPool pool(f.threads, f.pin);
  Sampler sampler(f.sampling, model.config().vocab_size);
  SequenceState seq = model.new_sequence();
  GenerationParams gp;
  gp.max_tokens = f.n_predict;
  gp.n_ctx = L.n_ctx;
  gp.prefill_chunk = f.batch;
  gp.stop = f.stop;
  gp.ignore_eos = f.ignore_eos;
  gp.skip_special = !raw;

  const bool tty = stdout_is_tty();
  const int32_t think_end = tk ? tk->token_id("</think>") : -1;
  bool in_reasoning = thinking;
  if (in_reasoning) std::fputs(tty ? "\033[2m" : "<think>\n", stdout);

  ProgressBar bar(f.progress || stderr_is_tty(), "prompt", false, f.progress ? 0.0 : 2.0);
  GenerationCallbacks cb;
  cb.interrupt = &g_interrupt;
  cb.on_prefill_progress = [&](int64_t d, int64_t t) {
    bar.update(d, t);
    if (d == t) bar.finish();
  };
  cb.on_token = [&](int32_t token, const std::string& text, const float*) {
    if (in_reasoning && token == think_end) {
      in_reasoning = false;
      std::fputs(tty ? "\033[0m\n" : "\n</think>\n", stdout);
    }
    if (!tk && token >= 0) std::fprintf(stdout, "%d ", token);
    if (!text.empty()) std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);

  GenerationResult r = generate(model, pool, tk, seq, ids, sampler, gp, cb);
  bar.finish();
  if (in_reasoning && tty) std::fputs("\033[0m", stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  print_timings(L.load_s, r.timings, r.stop);
  if (r.stop == StopReason::kContextFull) {
    std::fprintf(stderr, "note: context limit of %lld tokens reached (raise -c)\n",
                 static_cast<long long>(L.n_ctx));
  }
  if (!output_json.empty()) {
    nlohmann::json j;
    j["prompt_ids"] = ids;
    j["tokens"] = r.tokens;
    j["text"] = r.text;
    j["stop"] = stop_reason_name(r.stop);
    j["seed"] = sampler.seed();
    j["timings"] = {{"load_s", L.load_s},
                    {"prompt_tokens", r.timings.prompt_tokens},
                    {"prompt_s", r.timings.prompt_s},
                    {"gen_tokens", r.timings.gen_tokens},
                    {"gen_s", r.timings.gen_s}};
    std::ofstream out(output_json);
    if (!out) throw Error("cannot write " + output_json);
    out << j.dump(1) << "\n";
  }
  return r.stop == StopReason::kInterrupted ? 130 : 0;
}

}  // namespace

DSV4_COMMAND("run", "generate a reply to one prompt (-m DIR -p TEXT)", run_main);

}  // namespace dsv4::cli
