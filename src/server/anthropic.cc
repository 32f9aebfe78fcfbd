// POST /v1/messages (Anthropic Messages API): system, content blocks (text, thinking, tool_use,
// tool_result), tools with input_schema, tool_choice, thinking, stop_sequences, streaming events
// message_start … message_stop.
#include "server/server_internal.h"
#include "util/error.h"

namespace dsv4::server {

static std::string blocks_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError(400, where + " must be a string or a list of blocks", "messages");
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& b = content[i];
    if (!b.is_object() || !b.contains("type") || b["type"] != "text" || !b.contains("text") ||
        !b["text"].is_string())
      throw ApiError(400, where + "[" + std::to_string(i) + "] must be a text block", "messages");
    if (!out.empty()) out += "\n\n";
    out += b["text"].get<std::string>();
  }
  return out;
}

static ojson convert_messages(const json& body) {
  ojson out = ojson::array();
  if (const json* sys = field(body, "system"))
    out.push_back({{"role", "system"}, {"content", blocks_text(*sys, "system")}});
  const json* msgs = field(body, "messages");
  if (!msgs) throw ApiError(400, "'messages' is required", "messages");
  if (!msgs->is_array() || msgs->empty())
    throw ApiError(400, "'messages' must be a non-empty list", "messages");
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string w = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw ApiError(400, w + " must be an object", "messages");
    const std::string role =
        m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>() : "";
    if (role != "user" && role != "assistant")
      throw ApiError(400, w + ".role must be \"user\" or \"assistant\"", "messages");
    const json* content = field(m, "content");
    if (!content) throw ApiError(400, w + ".content is required", "messages");
    if (content->is_string()) {
      out.push_back({{"role", role}, {"content", content->get<std::string>()}});
      continue;
    }
    if (!content->is_array())
      throw ApiError(400, w + ".content must be a string or a list of blocks", "messages");
    std::string text, thinking;
    ojson calls = ojson::array();
    for (size_t k = 0; k < content->size(); ++k) {
      const json& b = (*content)[k];
      const std::string bw = w + ".content[" + std::to_string(k) + "]";
      if (!b.is_object()) throw ApiError(400, bw + " must be an object", "messages");
      const std::string type = get_string_in(b, "type", "", bw, "messages");
      if (type == "text") {
        const json* t = field(b, "text");
        if (!t || !t->is_string()) throw ApiError(400, bw + ".text must be a string", "messages");
        if (!text.empty()) text += "\n\n";
        text += t->get<std::string>();
      } else if (type == "thinking" && role == "assistant") {
        const json* t = field(b, "thinking");
        if (!t || !t->is_string())
          throw ApiError(400, bw + ".thinking must be a string", "messages");
        thinking += t->get<std::string>();
      } else if (type == "redacted_thinking" && role == "assistant") {
        // opaque; nothing to render
      } else if (type == "tool_use" && role == "assistant") {
        const json* id = field(b, "id");
        const json* name = field(b, "name");
        if (!id || !id->is_string() || !name || !name->is_string())
          throw ApiError(400, bw + ": tool_use needs string id and name", "messages");
        const json* input = field(b, "input");
        if (input && !input->is_object())
          throw ApiError(400, bw + ".input must be an object", "messages");
        ojson call;
        call["id"] = *id;
        call["type"] = "function";
        call["function"] = {
            {"name", *name},
            {"arguments", input ? ojson(api::python_json_dumps(*input)) : ojson("{}")}};
        calls.push_back(std::move(call));
      } else if (type == "tool_result" && role == "user") {
        const json* id = field(b, "tool_use_id");
        if (!id || !id->is_string())
          throw ApiError(400, bw + ".tool_use_id must be a string", "messages");
        std::string c;
        if (const json* rc = field(b, "content")) c = blocks_text(*rc, bw + ".content");
        if (const json* e = field(b, "is_error")) {
          if (!e->is_boolean()) throw ApiError(400, bw + ".is_error must be a boolean", "messages");
          if (e->get<bool>()) c = "Error: " + c;
        }
        out.push_back({{"role", "tool"}, {"tool_call_id", *id}, {"content", c}});
      } else {
        throw ApiError(
            400,
            bw + ": content block type \"" + type + "\" is not supported in a " + role + " message",
            "messages");
      }
    }
    if (role == "assistant") {
      ojson a;
      a["role"] = "assistant";
      a["content"] = text;
      if (!thinking.empty()) a["reasoning_content"] = thinking;
      if (!calls.empty()) a["tool_calls"] = std::move(calls);
      out.push_back(std::move(a));
    } else if (!text.empty() || out.empty() || out.back().value("role", "") != "tool") {
      out.push_back({{"role", "user"}, {"content", text}});
    }
  }
  return out;
}

static ojson convert_tools(const json& tools) {
  if (!tools.is_array()) throw ApiError(400, "'tools' must be a list", "tools");
  ojson out = ojson::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    const std::string w = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) throw ApiError(400, w + " must be an object", "tools");
    const json* name = field(t, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty())
      throw ApiError(400, w + ".name must be a non-empty string", "tools");
    if (t.contains("type") && t["type"].is_string() && t["type"] != "custom" &&
        !t.contains("input_schema"))
      throw ApiError(
          400, w + ": server tools (type " + t["type"].get<std::string>() + ") are not supported",
          "tools");
    ojson f;
    f["name"] = *name;
    if (const json* d = field(t, "description")) f["description"] = *d;
    f["parameters"] = t.contains("input_schema") ? t["input_schema"] : ojson::object();
    out.push_back({{"type", "function"}, {"function", std::move(f)}});
  }
  return out;
}

static std::string stop_reason(const Run& run) {
  if (run.ended_with_tool_calls()) return "tool_use";
  switch (run.done().stop) {
    case StopReason::kMaxTokens:
    case StopReason::kContextFull:
      return "max_tokens";
    case StopReason::kStopString:
      return "stop_sequence";
    default:
      return "end_turn";
  }
}

static ojson tool_input(const std::string& args) {
  try {
    ojson j = ojson::parse(args);
    if (j.is_object()) return j;
  } catch (...) {
  }
  return ojson::object();
}

void handle_messages(Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
  ctx.metrics.messages++;
  json body = parse_body(req);
  if (field(body, "model") && !body["model"].is_string())
    throw ApiError(400, "'model' must be a string", "model");
  ojson messages = convert_messages(body);
  api::ChatOptions co;
  co.thinking = ctx.opts.default_thinking;
  if (const json* t = field(body, "thinking")) {
    if (!t->is_object()) throw ApiError(400, "'thinking' must be an object", "thinking");
    const std::string type = get_string_in(*t, "type", "", "thinking", "thinking");
    if (type == "enabled" || type == "adaptive")
      co.thinking = true;
    else if (type == "disabled")
      co.thinking = false;
    else
      throw ApiError(400, "'thinking.type' must be \"enabled\" or \"disabled\"", "thinking");
  }
  ojson tools;
  if (const json* t = field(body, "tools")) tools = convert_tools(*t);
  json choice;  // tool_choice, its type defaulting to "auto"
  if (const json* tc = field(body, "tool_choice")) {
    if (!tc->is_object()) throw ApiError(400, "'tool_choice' must be an object", "tool_choice");
    choice = *tc;
    if (!field(choice, "type")) choice["type"] = "auto";
    const json& type = choice["type"];
    if (!type.is_string() || (type != "auto" && type != "any" && type != "tool" && type != "none"))
      throw ApiError(400, "'tool_choice.type' must be auto, any, tool or none", "tool_choice");
  }
  const ToolChoice tool_choice = read_tool_choice(json{{"tool_choice", choice}}, std::move(tools));
  co.tools = tool_choice.tools;
  GenRequest g;
  const int64_t max_tokens = get_int(body, "max_tokens", 1, INT32_MAX, -1);
  g.gen.max_tokens = static_cast<int>(max_tokens);
  g.sampling.temperature = static_cast<float>(get_number(body, "temperature", 0, 2, 1.0));
  g.sampling.top_p = static_cast<float>(get_number(body, "top_p", 0, 1, 1.0));
  if (g.sampling.top_p <= 0) throw ApiError(400, "'top_p' must be in (0, 1]", "top_p");
  g.sampling.top_k = static_cast<int>(get_int(body, "top_k", 0, 1 << 30, 0));
  g.gen.stop = get_stops(body, "stop_sequences");
  g.gen.skip_special = false;
  const bool stream = get_bool(body, "stream", false);
  const RunOptions ro = prepare_chat_request(ctx, body, messages, co, tool_choice, g, "messages");
  const bool thinking = co.thinking;
  auto run = std::make_shared<Run>(ctx, std::move(g), ro);
  const std::string id = random_id("msg_");
  const std::string model = body.contains("model") && body["model"].is_string()
                                ? body["model"].get<std::string>()
                                : ctx.model_id;
  if (!stream) {
    wait_for_reply(req, *run);
    run->check_failure();
    const api::ParsedCompletion& m = run->message();
    ojson content = ojson::array();
    if (thinking && !m.reasoning_content.empty())
      content.push_back(
          {{"type", "thinking"}, {"thinking", strip_dsml(m.reasoning_content)}, {"signature", ""}});
    const std::string text = strip_dsml(m.content);
    if (!text.empty() || m.tool_calls.empty())
      content.push_back({{"type", "text"}, {"text", text}});
    for (const auto& c : m.tool_calls)
      content.push_back({{"type", "tool_use"},
                         {"id", c.id},
                         {"name", c.name},
                         {"input", tool_input(c.arguments)}});
    ojson r;
    r["id"] = id;
    r["type"] = "message";
    r["role"] = "assistant";
    r["model"] = model;
    r["content"] = std::move(content);
    r["stop_reason"] = stop_reason(*run);
    r["stop_sequence"] =
        run->stop_sequence().empty() ? ojson(nullptr) : ojson(run->stop_sequence());
    r["usage"] = {{"input_tokens", run->prompt_tokens()},
                  {"output_tokens", run->completion_tokens()}};
    res.set_content(r.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  struct State {
    bool started = false;
    int index = -1;
    std::string open;  // "", "thinking", "text"
  };
  auto st = std::make_shared<State>();
  const int64_t prompt_tokens = run->prompt_tokens();
  stream_sse(res, run, [=](std::string& out) -> bool {
    if (!st->started) {
      st->started = true;
      ojson msg = {{"id", id},
                   {"type", "message"},
                   {"role", "assistant"},
                   {"model", model},
                   {"content", ojson::array()},
                   {"stop_reason", nullptr},
                   {"stop_sequence", nullptr},
                   {"usage", {{"input_tokens", prompt_tokens}, {"output_tokens", 0}}}};
      out += sse_event("message_start", {{"type", "message_start"}, {"message", msg}});
    }
    auto close = [&]() {
      if (st->open.empty()) return;
      if (st->open == "thinking")
        out += sse_event("content_block_delta",
                         {{"type", "content_block_delta"},
                          {"index", st->index},
                          {"delta", {{"type", "signature_delta"}, {"signature", ""}}}});
      out +=
          sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", st->index}});
      st->open.clear();
    };
    auto open = [&](const std::string& kind) {
      if (st->open == kind) return;
      close();
      ++st->index;
      st->open = kind;
      ojson block = kind == "thinking" ? ojson{{"type", "thinking"}, {"thinking", ""}}
                                       : ojson{{"type", "text"}, {"text", ""}};
      out += sse_event(
          "content_block_start",
          {{"type", "content_block_start"}, {"index", st->index}, {"content_block", block}});
    };
    std::vector<RunEvent> evs;
    const bool fin = run->poll(evs, std::chrono::milliseconds(100));
    for (auto& e : evs) {
      if (e.type == RunEvent::Type::kReasoning) {
        open("thinking");
        out += sse_event("content_block_delta",
                         {{"type", "content_block_delta"},
                          {"index", st->index},
                          {"delta", {{"type", "thinking_delta"}, {"thinking", e.text}}}});
      } else if (e.type == RunEvent::Type::kContent) {
        open("text");
        out += sse_event("content_block_delta",
                         {{"type", "content_block_delta"},
                          {"index", st->index},
                          {"delta", {{"type", "text_delta"}, {"text", e.text}}}});
      } else {
        close();
        ++st->index;
        out += sse_event("content_block_start", {{"type", "content_block_start"},
                                                 {"index", st->index},
                                                 {"content_block",
                                                  {{"type", "tool_use"},
                                                   {"id", e.tool_id},
                                                   {"name", e.tool_name},
                                                   {"input", ojson::object()}}}});
        out +=
            sse_event("content_block_delta",
                      {{"type", "content_block_delta"},
                       {"index", st->index},
                       {"delta", {{"type", "input_json_delta"}, {"partial_json", e.tool_args}}}});
        out +=
            sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", st->index}});
      }
    }
    if (!fin) return true;
    try {
      run->check_failure();
    } catch (const ApiError& e) {
      close();
      out += sse_event("error",
                       {{"type", "error"},
                        {"error", {{"type", error_type_for(e.status)}, {"message", e.what()}}}});
      return false;
    }
    if (st->index < 0) open("text");  // always at least one block
    close();
    out += sse_event(
        "message_delta",
        {{"type", "message_delta"},
         {"delta",
          {{"stop_reason", stop_reason(*run)},
           {"stop_sequence",
            run->stop_sequence().empty() ? ojson(nullptr) : ojson(run->stop_sequence())}}},
         {"usage", {{"output_tokens", run->completion_tokens()}}}});
    out += sse_event("message_stop", {{"type", "message_stop"}});
    return false;
  });
}

}  // namespace dsv4::server
