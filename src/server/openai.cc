// POST /v1/chat/completions and POST /v1/completions (OpenAI shapes, streaming and not).
#include <algorithm>
#include <set>

#include "server/server_internal.h"
#include "util/error.h"

namespace dsv4::server {

static const std::set<std::string> kRoles = {"system", "user", "assistant", "tool", "developer"};

static std::string msg_where(size_t i) { return "messages[" + std::to_string(i) + "]"; }

ojson convert_openai_messages(const json& messages) {
  if (!messages.is_array()) throw ApiError(400, "'messages' must be a list", "messages");
  if (messages.empty()) throw ApiError(400, "'messages' must not be empty", "messages");
  if (messages.size() > 100000) throw ApiError(400, "'messages' has too many entries", "messages");
  ojson out = ojson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string w = msg_where(i);
    if (!m.is_object()) throw ApiError(400, w + " must be an object", "messages");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) throw ApiError(400, w + ".role must be a string", "messages");
    const std::string r = role->get<std::string>();
    if (!kRoles.count(r)) throw ApiError(400, w + ".role: unknown role \"" + r + "\"", "messages");
    ojson o;
    // OpenAI's "developer" is the system prompt of newer clients (the encoder's own developer role
    // is DeepSeek's internal search-agent turn).
    o["role"] = r == "developer" ? "system" : r;
    const json* content = field(m, "content");
    if (!content) {
      if (r == "user" || r == "tool" || r == "system")
        throw ApiError(400, w + ".content is required for role " + r, "messages");
      o["content"] = "";
    } else if (content->is_string()) {
      o["content"] = *content;
    } else if (content->is_array()) {
      std::string text;
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const std::string pw = w + ".content[" + std::to_string(k) + "]";
        if (!part.is_object()) throw ApiError(400, pw + " must be an object", "messages");
        const std::string type = get_string_in(part, "type", "", pw, "messages");
        if (type != "text" && type != "input_text" && type != "output_text")
          throw ApiError(400,
                         pw + ": content part type \"" + type + "\" is not supported (text only)",
                         "messages");
        const json* t = field(part, "text");
        if (!t || !t->is_string()) throw ApiError(400, pw + ".text must be a string", "messages");
        text += t->get<std::string>();
      }
      o["content"] = text;
    } else {
      throw ApiError(400, w + ".content must be a string, a list of text parts or null",
                     "messages");
    }
    if (r == "assistant") {
      for (const char* k : {"reasoning_content", "reasoning"}) {
        if (const json* rc = field(m, k)) {
          if (!rc->is_string()) throw ApiError(400, w + "." + k + " must be a string", "messages");
          o["reasoning_content"] = *rc;
        }
      }
      if (const json* tc = field(m, "tool_calls")) {
        if (!tc->is_array()) throw ApiError(400, w + ".tool_calls must be a list", "messages");
        ojson calls = ojson::array();
        for (size_t k = 0; k < tc->size(); ++k) {
          const json& c = (*tc)[k];
          const std::string cw = w + ".tool_calls[" + std::to_string(k) + "]";
          if (!c.is_object()) throw ApiError(400, cw + " must be an object", "messages");
          const json* fn = field(c, "function");
          if (!fn || !fn->is_object())
            throw ApiError(400, cw + ".function must be an object", "messages");
          const json* name = field(*fn, "name");
          if (!name || !name->is_string())
            throw ApiError(400, cw + ".function.name must be a string", "messages");
          ojson call;
          call["id"] = get_string_in(c, "id", "", cw, "messages");
          call["type"] = "function";
          ojson f;
          f["name"] = *name;
          const json* args = field(*fn, "arguments");
          if (!args)
            f["arguments"] = "{}";
          else if (args->is_string() || args->is_object())
            f["arguments"] = *args;
          else
            throw ApiError(400, cw + ".function.arguments must be a JSON string", "messages");
          call["function"] = std::move(f);
          calls.push_back(std::move(call));
        }
        if (!calls.empty()) o["tool_calls"] = std::move(calls);
      }
      if (const json* p = field(m, "prefix");
          p && p->is_boolean() && p->get<bool>() && i + 1 == messages.size())
        o["wo_eos"] = true;  // DeepSeek "prefix" completion: continue this assistant message
    }
    if (r == "tool") {
      const json* id = field(m, "tool_call_id");
      if (!id || !id->is_string())
        throw ApiError(400, w + ".tool_call_id must be a string", "messages");
      o["tool_call_id"] = *id;
    }
    out.push_back(std::move(o));
  }
  return out;
}

ojson convert_openai_tools(const json& tools, const std::string& param) {
  if (!tools.is_array()) throw ApiError(400, "'" + param + "' must be a list", param);
  ojson out = ojson::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    const std::string w = param + "[" + std::to_string(i) + "]";
    if (!t.is_object()) throw ApiError(400, w + " must be an object", param);
    const std::string type = get_string_in(t, "type", "function", w, param);
    if (type != "function")
      throw ApiError(400, w + ": only tools of type \"function\" are supported", param);
    const json* fn = field(t, "function");
    ojson f;
    if (fn) {  // Chat Completions shape
      if (!fn->is_object()) throw ApiError(400, w + ".function must be an object", param);
      f = *fn;
    } else {  // Responses shape: name/description/parameters at the top level
      for (auto it = t.begin(); it != t.end(); ++it)
        if (it.key() != "type" && it.key() != "strict") f[it.key()] = it.value();
    }
    const json* name = field(f, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty())
      throw ApiError(400, w + ".function.name must be a non-empty string", param);
    ojson tool;
    tool["type"] = "function";
    tool["function"] = std::move(f);
    out.push_back(std::move(tool));
  }
  return out;
}

// Thinking on/off from the request (chat_template_kwargs.thinking / enable_thinking,
// thinking.type, reasoning_effort), and the effort for the prompt.
void read_thinking(const Ctx& ctx, const json& body, api::ChatOptions& co) {
  co.thinking = ctx.opts.default_thinking;
  if (const json* re = field(body, "reasoning_effort")) {
    if (!re->is_string())
      throw ApiError(400, "'reasoning_effort' must be a string", "reasoning_effort");
    const std::string s = re->get<std::string>();
    if (s == "none" || s == "minimal") {
      co.thinking = false;
    } else {
      try {
        co.reasoning_effort = api::parse_reasoning_effort(s);
      } catch (const Error& e) {
        throw ApiError(400, std::string("'reasoning_effort': ") + e.what(), "reasoning_effort");
      }
      co.thinking = true;
    }
  }
  if (const json* r = field(body, "reasoning")) {  // Responses: {"effort": ...}
    if (!r->is_object()) throw ApiError(400, "'reasoning' must be an object", "reasoning");
    if (const json* e = field(*r, "effort")) {
      if (!e->is_string()) throw ApiError(400, "'reasoning.effort' must be a string", "reasoning");
      const std::string s = e->get<std::string>();
      if (s == "none" || s == "minimal")
        co.thinking = false;
      else {
        try {
          co.reasoning_effort = api::parse_reasoning_effort(s);
        } catch (const Error& ex) {
          throw ApiError(400, std::string("'reasoning.effort': ") + ex.what(), "reasoning");
        }
        co.thinking = true;
      }
    }
  }
  if (const json* t = field(body, "thinking")) {
    if (!t->is_object()) throw ApiError(400, "'thinking' must be an object", "thinking");
    const std::string type = get_string_in(*t, "type", "", "thinking", "thinking");
    if (type == "enabled")
      co.thinking = true;
    else if (type == "disabled")
      co.thinking = false;
    else
      throw ApiError(400, "'thinking.type' must be \"enabled\" or \"disabled\"", "thinking");
  }
  if (const json* k = field(body, "chat_template_kwargs")) {
    if (!k->is_object())
      throw ApiError(400, "'chat_template_kwargs' must be an object", "chat_template_kwargs");
    for (const char* key : {"thinking", "enable_thinking"}) {
      if (const json* v = field(*k, key)) {
        if (!v->is_boolean())
          throw ApiError(400, std::string("'chat_template_kwargs.") + key + "' must be a boolean",
                         "chat_template_kwargs");
        co.thinking = v->get<bool>();
      }
    }
    if (const json* v = field(*k, "reasoning_effort")) {
      if (!v->is_string())
        throw ApiError(400, "'chat_template_kwargs.reasoning_effort' must be a string",
                       "chat_template_kwargs");
      try {
        co.reasoning_effort = api::parse_reasoning_effort(v->get<std::string>());
      } catch (const Error& e) {
        throw ApiError(400, std::string("'chat_template_kwargs.reasoning_effort': ") + e.what(),
                       "chat_template_kwargs");
      }
    }
  }
}

static std::string tool_name(const ojson& tool) { return tool["function"].value("name", ""); }

// tool_choice: "none" drops the tools from the prompt, a named function keeps only that tool;
// "required" (Anthropic "any") and a named function also require the reply to be a tool call.
ToolChoice read_tool_choice(const json& body, ojson tools) {
  ToolChoice c;
  if (tools.is_array() && tools.empty()) tools = nullptr;
  c.tools = std::move(tools);
  const json* tc = field(body, "tool_choice");
  if (!tc) return c;
  std::string mode, name;
  if (tc->is_string()) {
    mode = tc->get<std::string>();
    if (mode != "none" && mode != "auto" && mode != "required" && mode != "any")
      throw ApiError(400,
                     "'tool_choice' must be \"none\", \"auto\", \"required\" or name a function",
                     "tool_choice");
  } else if (tc->is_object()) {
    const json* type = field(*tc, "type");
    if (type && !type->is_string())
      throw ApiError(400, "'tool_choice.type' must be a string", "tool_choice");
    mode = type ? type->get<std::string>() : "function";
    if (mode == "function" || mode == "tool") {
      const json* n = nullptr;
      if (const json* f = field(*tc, "function")) {
        if (!f->is_object())
          throw ApiError(400, "'tool_choice.function' must be an object", "tool_choice");
        n = field(*f, "name");
      } else {
        n = field(*tc, "name");
      }
      if (!n || !n->is_string() || n->get<std::string>().empty())
        throw ApiError(400, "'tool_choice' must name the function to call", "tool_choice");
      name = n->get<std::string>();
      mode = "named";
    } else if (mode != "none" && mode != "auto" && mode != "required" && mode != "any") {
      throw ApiError(400,
                     "'tool_choice.type' must be \"none\", \"auto\", \"required\" (\"any\") or "
                     "\"function\" (\"tool\")",
                     "tool_choice");
    }
  } else {
    throw ApiError(400, "'tool_choice' must be a string or an object", "tool_choice");
  }
  if (mode == "none") {
    c.tools = nullptr;
    return c;
  }
  if (mode == "auto") return c;
  if (c.tools.is_null())
    throw ApiError(400, "'tool_choice' requires a tool call, but no tools were given",
                   "tool_choice");
  c.required = true;
  auto check_writable = [](const std::string& n) {
    if (n.find_first_of("\"\n") != std::string::npos)
      throw ApiError(400,
                     "'tool_choice': the function name \"" + n +
                         "\" cannot be written in a DSML tool call (it holds a quote or a newline)",
                     "tool_choice");
  };
  if (mode == "named") {
    ojson kept = ojson::array();
    for (auto& t : c.tools)
      if (tool_name(t) == name) kept.push_back(t);
    if (kept.empty())
      throw ApiError(400,
                     "'tool_choice' names the function \"" + name + "\", which is not in 'tools'",
                     "tool_choice");
    check_writable(name);
    c.tools = std::move(kept);
    c.name = name;
  } else {
    // The reply must name one of these (force_tool_call constrains it), so each must be writable.
    for (const auto& t : c.tools) check_writable(tool_name(t));
    if (c.tools.size() == 1) c.name = tool_name(c.tools[0]);
  }
  return c;
}

// Enforcing a required tool call without a grammar engine: the reply is made to start with the
// opening of a DSML tool_calls block — through `name="X">\n` for a named function (or the only
// tool given), through `name="` for "required" with several tools — and the model writes the
// rest. With several tools, the name it writes is constrained (GenerationParams::after_forced) to
// one of theirs followed by `">\n`, the bytes the format puts after a name: only then is the
// invoke opened, so the call can be reported whatever the model writes next, and a name alone
// (`NAME"`) could still be followed by a broken tag. The opener is forced by the generator
// (GenerationParams::forced) rather than appended to the prompt:
//  * in thinking mode the call can only start once the model has closed its reasoning, which
//    happens during generation (force_after = </think>); one mechanism covers both modes;
//  * the forced tokens are output tokens, so they reach the output parser through the ordinary
//    token stream and streaming and non-streaming replies parse them the same way;
//  * they cost no decode steps of their own (fed with the prompt's last chunk, or together with
//    the </think> that triggered them).
// A weak model may still not finish the call; the parser then salvages what it named and never
// returns the block as content (OutputParserOptions::tool_call_forced), and the generation stops
// as soon as the block can no longer parse (see Run::Run).
static void force_tool_call(const Ctx& ctx, const ToolChoice& tc, bool thinking, GenRequest& g,
                            RunOptions& ro) {
  if (!tc.required) return;
  const std::string d(api::kDsml);
  std::string opener = "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"";
  if (!tc.name.empty()) {
    opener += tc.name + "\">\n";
  } else {
    std::vector<std::string> choices;
    for (const auto& t : tc.tools) choices.push_back(tool_name(t) + "\">\n");
    g.gen.after_forced = std::make_shared<const ChoiceConstraint>(ctx.vocab, std::move(choices));
  }
  try {
    g.gen.forced = ctx.tok->encode(opener);
  } catch (const Error& e) {
    throw ApiError(400, std::string("'tool_choice': ") + e.what(), "tool_choice");
  }
  g.gen.force_after = -1;
  if (thinking) {
    g.gen.force_after = ctx.tok->token_id(api::kThinkEnd);
    if (g.gen.force_after < 0)
      throw ApiError(500, "the tokenizer has no </think> token to enforce tool_choice after");
  }
  ro.tool_call_forced = true;
}

RunOptions prepare_chat_request(Ctx& ctx, const json& body, const ojson& messages,
                                const api::ChatOptions& co, const ToolChoice& tc, GenRequest& g,
                                const char* param) {
  try {
    g.prompt = api::encode_chat(*ctx.tok, messages, co);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), param);
  }
  finish_request(ctx, body, g);
  RunOptions ro{true, co.thinking};
  force_tool_call(ctx, tc, co.thinking, g, ro);
  return ro;
}

static void reject_n(const json& body) {
  if (field(body, "n") && get_int(body, "n", 1, 128, 1) != 1)
    throw ApiError(400, "'n' > 1 is not supported", "n");
  if (field(body, "best_of") && get_int(body, "best_of", 1, 128, 1) != 1)
    throw ApiError(400, "'best_of' > 1 is not supported", "best_of");
}

static int64_t read_max_tokens(const json& body, std::initializer_list<const char*> keys) {
  int64_t mt = -1;
  for (const char* k : keys)
    if (field(body, k)) mt = get_int(body, k, 1, INT32_MAX, -1);
  return mt;
}

static ojson usage_json(const Run& run) {
  ojson u;
  u["prompt_tokens"] = run.prompt_tokens();
  u["completion_tokens"] = run.completion_tokens();
  u["total_tokens"] = run.prompt_tokens() + run.completion_tokens();
  return u;
}

// `stream` and `stream_options.include_usage` of a chat or completions request.
static std::pair<bool, bool> read_stream_options(const json& body) {
  bool include_usage = false;
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object())
      throw ApiError(400, "'stream_options' must be an object", "stream_options");
    include_usage = get_bool(*so, "include_usage", false);
  }
  return {get_bool(body, "stream", false), include_usage};
}

// The fields every response object and stream chunk of one request starts with.
static ojson envelope(const std::string& id, const char* object, int64_t created,
                      const std::string& model) {
  ojson c;
  c["id"] = id;
  c["object"] = object;
  c["created"] = created;
  c["model"] = model;
  c["system_fingerprint"] = "dsv4";
  return c;
}

// The chunk a stream ends with when the request asked for usage: no choices, the run's usage.
static std::string usage_chunk(ojson env, const Run& run) {
  env["choices"] = ojson::array();
  env["usage"] = usage_json(run);
  return sse_data(env);
}

static ojson message_json(const Run& run, bool thinking) {
  const api::ParsedCompletion& m = run.message();
  ojson msg;
  msg["role"] = "assistant";
  std::string content = strip_dsml(m.content);
  msg["content"] = content.empty() && !m.tool_calls.empty() ? ojson(nullptr) : ojson(content);
  if (thinking) msg["reasoning_content"] = strip_dsml(m.reasoning_content);
  if (!m.tool_calls.empty()) {
    ojson calls = ojson::array();
    for (const auto& c : m.tool_calls) {
      ojson call;
      call["id"] = c.id;
      call["type"] = "function";
      call["function"] = {{"name", c.name}, {"arguments", c.arguments}};
      calls.push_back(std::move(call));
    }
    msg["tool_calls"] = std::move(calls);
  }
  msg["refusal"] = nullptr;
  return msg;
}

void handle_chat(Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
  ctx.metrics.chat++;
  json body = parse_body(req);
  reject_n(body);
  const json* msgs = field(body, "messages");
  if (!msgs) throw ApiError(400, "'messages' is required", "messages");
  if (field(body, "model") && !body["model"].is_string())
    throw ApiError(400, "'model' must be a string", "model");
  ojson messages = convert_openai_messages(*msgs);
  api::ChatOptions co;
  read_thinking(ctx, body, co);
  ojson tools;
  if (const json* t = field(body, "tools")) tools = convert_openai_tools(*t, "tools");
  const ToolChoice tool_choice = read_tool_choice(body, std::move(tools));
  co.tools = tool_choice.tools;
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object())
      throw ApiError(400, "'response_format' must be an object", "response_format");
    const std::string type =
        get_string_in(*rf, "type", "text", "response_format", "response_format");
    if (type == "json_schema" || type == "json_object")
      co.response_format = *rf;
    else if (type != "text")
      throw ApiError(400, "'response_format.type' must be text, json_object or json_schema",
                     "response_format");
  }
  const auto [stream, include_usage] = read_stream_options(body);
  GenRequest g;
  read_sampling(body, g.sampling);
  g.gen.max_tokens =
      static_cast<int>(read_max_tokens(body, {"max_tokens", "max_completion_tokens"}));
  g.gen.stop = get_stops(body, "stop");
  g.gen.skip_special = false;  // </think> and DSML markers must reach the output parser
  const bool logprobs = get_bool(body, "logprobs", false);
  const int64_t top_lp = get_int(body, "top_logprobs", 0, 20, 0);
  if (field(body, "top_logprobs") && !logprobs)
    throw ApiError(400, "'top_logprobs' requires 'logprobs': true", "top_logprobs");
  g.logprobs = logprobs ? static_cast<int>(top_lp) : -1;
  const RunOptions ro = prepare_chat_request(ctx, body, messages, co, tool_choice, g, "messages");
  const bool thinking = co.thinking;
  // Test hook: return the prompt ids (to check the rendering against the encoder goldens).
  ojson prompt_ids;
  if (ctx.opts.test_hooks && get_bool(body, "dsv4_return_prompt", false)) prompt_ids = g.prompt;
  auto run = std::make_shared<Run>(ctx, std::move(g), ro);

  const std::string id = random_id("chatcmpl-");
  const int64_t created = unix_now();
  const std::string model = ctx.model_id;
  if (!stream) {
    wait_for_reply(req, *run);
    run->check_failure();
    ojson r = envelope(id, "chat.completion", created, model);
    ojson choice;
    choice["index"] = 0;
    choice["message"] = message_json(*run, thinking);
    if (logprobs) {
      const std::vector<LogprobEntry> lp = run->take_logprobs();
      choice["logprobs"] = openai_logprobs(*ctx.tok, lp);
      // A reply that is only tool calls has no content tokens (see Run::settle_logprobs): null,
      // like message.content.
      if (lp.empty() && run->has_tool_calls()) choice["logprobs"]["content"] = nullptr;
    } else {
      choice["logprobs"] = nullptr;
    }
    choice["finish_reason"] = run->finish_reason();
    r["choices"] = ojson::array({choice});
    r["usage"] = usage_json(*run);
    if (!prompt_ids.is_null()) r["dsv4_prompt_ids"] = std::move(prompt_ids);
    res.set_content(r.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  auto started = std::make_shared<bool>(false);
  const tok::Tokenizer* tk = ctx.tok.get();
  auto chunk = [id, created, model, include_usage](ojson delta, ojson finish, ojson lp) {
    ojson c = envelope(id, "chat.completion.chunk", created, model);
    ojson ch;
    ch["index"] = 0;
    ch["delta"] = std::move(delta);
    ch["logprobs"] = std::move(lp);
    ch["finish_reason"] = std::move(finish);
    c["choices"] = ojson::array({std::move(ch)});
    if (include_usage) c["usage"] = nullptr;
    return c;
  };
  stream_sse(res, run, [=](std::string& out) -> bool {
    if (!*started) {
      *started = true;
      out += sse_data(chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
    }
    std::vector<RunEvent> evs;
    const bool fin = run->poll(evs, std::chrono::milliseconds(100));
    std::vector<ojson> chunks;
    size_t text_chunks = 0;  // 1 + index of the last reasoning / content chunk (0: none)
    for (auto& e : evs) {
      switch (e.type) {
        case RunEvent::Type::kReasoning:
          chunks.push_back(chunk({{"reasoning_content", e.text}}, nullptr, nullptr));
          text_chunks = chunks.size();
          break;
        case RunEvent::Type::kContent:
          chunks.push_back(chunk({{"content", e.text}}, nullptr, nullptr));
          text_chunks = chunks.size();
          break;
        case RunEvent::Type::kToolCall: {
          if (!e.tool_name.empty()) {
            ojson tc;
            tc["index"] = e.tool_index;
            tc["id"] = e.tool_id;
            tc["type"] = "function";
            tc["function"] = {{"name", e.tool_name}, {"arguments", ""}};
            chunks.push_back(chunk({{"tool_calls", ojson::array({tc})}}, nullptr, nullptr));
          }
          if (!e.tool_args.empty()) {
            ojson tc;
            tc["index"] = e.tool_index;
            tc["function"] = {{"arguments", e.tool_args}};
            chunks.push_back(chunk({{"tool_calls", ojson::array({tc})}}, nullptr, nullptr));
          }
          break;
        }
      }
    }
    // Entries ride on text chunks only: a tool-call chunk carries none (Run::settle_logprobs).
    // Those of markers that release no text (</think>) wait for the next text or final chunk.
    if (logprobs && text_chunks > 0) {
      auto lp = run->take_logprobs();
      if (!lp.empty()) chunks[text_chunks - 1]["choices"][0]["logprobs"] = openai_logprobs(*tk, lp);
    }
    for (auto& c : chunks) out += sse_data(c);
    if (!fin) return true;
    run->check_failure();
    ojson last = chunk(ojson::object(), run->finish_reason(), nullptr);
    if (logprobs) {
      auto lp = run->take_logprobs();
      if (!lp.empty()) last["choices"][0]["logprobs"] = openai_logprobs(*tk, lp);
    }
    out += sse_data(last);
    if (include_usage)
      out += usage_chunk(envelope(id, "chat.completion.chunk", created, model), *run);
    out += "data: [DONE]\n\n";
    return false;
  });
}

// ---- /v1/completions ---------------------------------------------------------------------------

static ojson legacy_logprobs(const tok::Tokenizer& tok, const std::vector<LogprobEntry>& lp,
                             size_t text_offset) {
  ojson tokens = ojson::array(), tlp = ojson::array(), top = ojson::array(), off = ojson::array();
  for (const auto& e : lp) {
    std::string t = token_text(tok, e.token);
    tokens.push_back(t);
    tlp.push_back(e.logprob);
    ojson m = ojson::object();
    for (const auto& x : e.top) m[token_text(tok, x.token)] = x.logprob;
    top.push_back(std::move(m));
    off.push_back(text_offset);
    text_offset += t.size();
  }
  ojson r;
  r["tokens"] = std::move(tokens);
  r["token_logprobs"] = std::move(tlp);
  r["top_logprobs"] = std::move(top);
  r["text_offset"] = std::move(off);
  return r;
}

void handle_completions(Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
  ctx.metrics.completions++;
  json body = parse_body(req);
  reject_n(body);
  const json* p = field(body, "prompt");
  if (!p) throw ApiError(400, "'prompt' is required", "prompt");
  GenRequest g;
  auto ids_from = [&](const json& arr) {
    std::vector<int32_t> ids;
    for (const auto& x : arr) {
      if (!x.is_number_integer())
        throw ApiError(400, "'prompt' token ids must be integers", "prompt");
      const int64_t v = x.get<int64_t>();
      if (v < 0 || v >= static_cast<int64_t>(ctx.model->config().vocab_size))
        throw ApiError(400, "'prompt' token id " + std::to_string(v) + " is outside the vocabulary",
                       "prompt");
      ids.push_back(static_cast<int32_t>(v));
    }
    return ids;
  };
  auto encode = [&](const std::string& s) {
    try {
      return ctx.tok->encode(s);
    } catch (const Error& e) {
      throw ApiError(400, std::string("'prompt': ") + e.what(), "prompt");
    }
  };
  if (p->is_string()) {
    g.prompt = encode(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    g.prompt = ids_from(*p);
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    g.prompt = encode((*p)[0].get<std::string>());
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_array()) {
    g.prompt = ids_from((*p)[0]);
  } else if (p->is_array() && p->size() > 1) {
    throw ApiError(400, "only one prompt per request is supported", "prompt");
  } else {
    throw ApiError(400, "'prompt' must be a string, a list of token ids, or a list of one of those",
                   "prompt");
  }
  if (g.prompt.empty()) throw ApiError(400, "'prompt' is empty", "prompt");
  if (get_bool(body, "echo", false)) throw ApiError(400, "'echo' is not supported", "echo");
  if (!get_string(body, "suffix", "").empty())
    throw ApiError(400, "'suffix' is not supported", "suffix");
  read_sampling(body, g.sampling);
  g.gen.max_tokens = static_cast<int>(read_max_tokens(body, {"max_tokens"}));
  if (g.gen.max_tokens < 0) g.gen.max_tokens = 16;  // OpenAI's default for completions
  g.gen.stop = get_stops(body, "stop");
  g.gen.skip_special = true;
  const int64_t lp_k = field(body, "logprobs") ? get_int(body, "logprobs", 0, 20, 0) : -1;
  g.logprobs = static_cast<int>(lp_k);
  const auto [stream, include_usage] = read_stream_options(body);
  finish_request(ctx, body, g);
  auto run = std::make_shared<Run>(ctx, std::move(g), RunOptions{false, false});
  const std::string id = random_id("cmpl-");
  const int64_t created = unix_now();
  const std::string model = ctx.model_id;
  auto base = [id, created, model]() { return envelope(id, "text_completion", created, model); };
  if (!stream) {
    wait_for_reply(req, *run);
    run->check_failure();
    ojson r = base();
    ojson choice;
    choice["text"] = run->raw_text();
    choice["index"] = 0;
    choice["logprobs"] =
        lp_k >= 0 ? legacy_logprobs(*ctx.tok, run->take_logprobs(), 0) : ojson(nullptr);
    choice["finish_reason"] = run->finish_reason();
    r["choices"] = ojson::array({choice});
    r["usage"] = usage_json(*run);
    res.set_content(r.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }
  const tok::Tokenizer* tk = ctx.tok.get();
  auto offset = std::make_shared<size_t>(0);
  stream_sse(res, run, [=](std::string& out) -> bool {
    std::vector<RunEvent> evs;
    const bool fin = run->poll(evs, std::chrono::milliseconds(100));
    std::string text;
    for (auto& e : evs) text += e.text;
    auto make = [&](const std::string& t, ojson finish) {
      ojson c = base();
      ojson ch;
      ch["text"] = t;
      ch["index"] = 0;
      ch["logprobs"] = nullptr;
      if (lp_k >= 0) {
        auto lp = run->take_logprobs();
        if (!lp.empty()) {
          ch["logprobs"] = legacy_logprobs(*tk, lp, *offset);
        }
      }
      *offset += t.size();
      ch["finish_reason"] = std::move(finish);
      c["choices"] = ojson::array({std::move(ch)});
      if (include_usage) c["usage"] = nullptr;
      return c;
    };
    if (!text.empty()) out += sse_data(make(text, nullptr));
    if (!fin) return true;
    run->check_failure();
    out += sse_data(make("", run->finish_reason()));
    if (include_usage) out += usage_chunk(base(), *run);
    out += "data: [DONE]\n\n";
    return false;
  });
}

}  // namespace dsv4::server
