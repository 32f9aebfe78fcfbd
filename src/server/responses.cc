// POST /v1/responses (OpenAI Responses API): input as a string or a list of message /
// function_call / function_call_output / reasoning items, instructions, function tools, reasoning
// effort; output items reasoning, message (output_text) and function_call; streaming events
// response.created … response.output_text.delta … response.completed.
#include "server/server_internal.h"
#include "util/error.h"

namespace dsv4::server {

static std::string item_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError(400, where + " must be a string or a list of parts", "input");
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& p = content[i];
    const std::string pw = where + "[" + std::to_string(i) + "]";
    const std::string type = p.is_object() ? get_string_in(p, "type", "", pw, "input") : "";
    if (type != "input_text" && type != "output_text" && type != "text" && type != "reasoning_text")
      throw ApiError(400, pw + ": part type \"" + type + "\" is not supported", "input");
    if (!p.contains("text") || !p["text"].is_string())
      throw ApiError(400, pw + ".text must be a string", "input");
    out += p["text"].get<std::string>();
  }
  return out;
}

static ojson convert_input(const json& body) {
  ojson out = ojson::array();
  if (const json* ins = field(body, "instructions")) {
    if (!ins->is_string()) throw ApiError(400, "'instructions' must be a string", "instructions");
    out.push_back({{"role", "system"}, {"content", *ins}});
  }
  const json* input = field(body, "input");
  if (!input) throw ApiError(400, "'input' is required", "input");
  if (input->is_string()) {
    out.push_back({{"role", "user"}, {"content", *input}});
    return out;
  }
  if (!input->is_array() || input->empty())
    throw ApiError(400, "'input' must be a string or a non-empty list", "input");
  std::string pending_reasoning;
  auto assistant = [&]() -> ojson& {
    if (out.empty() || out.back().value("role", "") != "assistant")
      out.push_back({{"role", "assistant"}, {"content", ""}});
    ojson& a = out.back();
    if (!pending_reasoning.empty()) {
      a["reasoning_content"] = pending_reasoning;
      pending_reasoning.clear();
    }
    return a;
  };
  for (size_t i = 0; i < input->size(); ++i) {
    const json& it = (*input)[i];
    const std::string w = "input[" + std::to_string(i) + "]";
    if (!it.is_object()) throw ApiError(400, w + " must be an object", "input");
    const std::string type = get_string_in(it, "type", "message", w, "input");
    if (type == "message") {
      const std::string role =
          it.contains("role") && it["role"].is_string() ? it["role"].get<std::string>() : "";
      if (role != "user" && role != "assistant" && role != "system" && role != "developer")
        throw ApiError(400, w + ".role must be user, assistant, system or developer", "input");
      if (!it.contains("content")) throw ApiError(400, w + ".content is required", "input");
      const std::string text = item_text(it["content"], w + ".content");
      if (role == "assistant") {
        out.push_back({{"role", "assistant"}, {"content", text}});
        if (!pending_reasoning.empty()) {
          out.back()["reasoning_content"] = pending_reasoning;
          pending_reasoning.clear();
        }
      } else {
        out.push_back({{"role", role == "developer" ? "system" : role}, {"content", text}});
      }
    } else if (type == "function_call") {
      const json* name = field(it, "name");
      const json* call_id = field(it, "call_id");
      if (!name || !name->is_string() || !call_id || !call_id->is_string())
        throw ApiError(400, w + ": function_call needs string name and call_id", "input");
      const json* args = field(it, "arguments");
      if (args && !args->is_string())
        throw ApiError(400, w + ".arguments must be a string", "input");
      ojson& a = assistant();
      if (!a.contains("tool_calls")) a["tool_calls"] = ojson::array();
      a["tool_calls"].push_back(
          {{"id", *call_id},
           {"type", "function"},
           {"function", {{"name", *name}, {"arguments", args ? *args : ojson("{}")}}}});
    } else if (type == "function_call_output") {
      const json* call_id = field(it, "call_id");
      if (!call_id || !call_id->is_string())
        throw ApiError(400, w + ".call_id must be a string", "input");
      const json* o = field(it, "output");
      std::string text = o ? item_text(*o, w + ".output") : "";
      out.push_back({{"role", "tool"}, {"tool_call_id", *call_id}, {"content", text}});
    } else if (type == "reasoning") {
      if (const json* c = field(it, "content"))
        pending_reasoning += item_text(*c, w + ".content");
      else if (const json* s = field(it, "summary")) {
        if (s->is_array())
          for (const auto& p : *s)
            if (p.is_object() && p.contains("text") && p["text"].is_string())
              pending_reasoning += p["text"].get<std::string>();
      }
    } else {
      throw ApiError(400, w + ": item type \"" + type + "\" is not supported", "input");
    }
  }
  return out;
}

void handle_responses(Ctx& ctx, const httplib::Request& req, httplib::Response& res) {
  ctx.metrics.responses++;
  json body = parse_body(req);
  if (field(body, "previous_response_id"))
    throw ApiError(400,
                   "'previous_response_id' is not supported (the server stores no responses); send "
                   "the full input",
                   "previous_response_id");
  if (field(body, "model") && !body["model"].is_string())
    throw ApiError(400, "'model' must be a string", "model");
  ojson messages = convert_input(body);
  api::ChatOptions co;
  read_thinking(ctx, body, co);
  ojson tools_echo = ojson::array();
  ojson tools;
  if (const json* t = field(body, "tools")) {
    tools = convert_openai_tools(*t, "tools");
    tools_echo = *t;
  }
  const ToolChoice tc = read_tool_choice(body, std::move(tools));
  co.tools = tc.tools;
  GenRequest g;
  read_sampling(body, g.sampling);
  g.gen.max_tokens = static_cast<int>(get_int(body, "max_output_tokens", 1, INT32_MAX, -1));
  g.gen.skip_special = false;
  const bool stream = get_bool(body, "stream", false);
  const RunOptions ro = prepare_chat_request(ctx, body, messages, co, tc, g, "input");
  const bool thinking = co.thinking;
  const float temperature = g.sampling.temperature, top_p = g.sampling.top_p;
  const int64_t max_out = g.gen.max_tokens;
  auto run = std::make_shared<Run>(ctx, std::move(g), ro);
  const std::string id = random_id("resp_");
  const int64_t created = unix_now();
  const std::string model = ctx.model_id;
  const ojson tool_choice = body.contains("tool_choice") ? body["tool_choice"] : ojson("auto");
  const ojson instructions = body.contains("instructions") ? body["instructions"] : ojson(nullptr);

  auto response_obj = [=](const std::string& status, ojson output) {
    ojson r;
    r["id"] = id;
    r["object"] = "response";
    r["created_at"] = created;
    r["status"] = status;
    r["error"] = nullptr;
    r["incomplete_details"] = nullptr;
    r["instructions"] = instructions;
    r["max_output_tokens"] = max_out > 0 ? ojson(max_out) : ojson(nullptr);
    r["model"] = model;
    r["output"] = std::move(output);
    r["parallel_tool_calls"] = true;
    r["reasoning"] = {{"effort", thinking ? ojson("high") : ojson(nullptr)}, {"summary", nullptr}};
    r["store"] = false;
    r["temperature"] = temperature;
    r["text"] = {{"format", {{"type", "text"}}}};
    r["tool_choice"] = tool_choice;
    r["tools"] = tools_echo;
    r["top_p"] = top_p;
    r["truncation"] = "disabled";
    r["usage"] = nullptr;
    return r;
  };
  auto finish_obj = [=](const Run& run, ojson output) {
    const bool incomplete = run.cut_off() && !run.ended_with_tool_calls();
    ojson r = response_obj(incomplete ? "incomplete" : "completed", std::move(output));
    if (incomplete) r["incomplete_details"] = {{"reason", "max_output_tokens"}};
    r["usage"] = {{"input_tokens", run.prompt_tokens()},
                  {"input_tokens_details", {{"cached_tokens", 0}}},
                  {"output_tokens", run.completion_tokens()},
                  {"output_tokens_details", {{"reasoning_tokens", 0}}},
                  {"total_tokens", run.prompt_tokens() + run.completion_tokens()}};
    return r;
  };
  auto reasoning_item = [](const std::string& rid, const std::string& text) {
    return ojson{{"type", "reasoning"},
                 {"id", rid},
                 {"summary", ojson::array()},
                 {"content", ojson::array({{{"type", "reasoning_text"}, {"text", text}}})}};
  };
  auto message_item = [](const std::string& mid, const std::string& text,
                         const std::string& status) {
    ojson parts = ojson::array();
    if (status == "completed")
      parts.push_back({{"type", "output_text"}, {"text", text}, {"annotations", ojson::array()}});
    return ojson{{"type", "message"},
                 {"id", mid},
                 {"status", status},
                 {"role", "assistant"},
                 {"content", parts}};
  };
  auto call_item = [](const std::string& fid, const std::string& call_id, const std::string& name,
                      const std::string& args, const std::string& status) {
    return ojson{{"type", "function_call"}, {"id", fid},       {"call_id", call_id}, {"name", name},
                 {"arguments", args},       {"status", status}};
  };

  if (!stream) {
    wait_for_reply(req, *run);
    run->check_failure();
    const api::ParsedCompletion& m = run->message();
    ojson output = ojson::array();
    if (thinking && !m.reasoning_content.empty())
      output.push_back(reasoning_item(random_id("rs_"), strip_dsml(m.reasoning_content)));
    const std::string text = strip_dsml(m.content);
    if (!text.empty() || m.tool_calls.empty())
      output.push_back(message_item(random_id("msg_"), text, "completed"));
    for (const auto& c : m.tool_calls)
      output.push_back(call_item(random_id("fc_"), c.id, c.name, c.arguments, "completed"));
    ojson r = finish_obj(*run, std::move(output));
    r["output_text"] = text;
    res.set_content(r.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  struct State {
    bool started = false;
    int64_t seq = 0;
    int out_index = -1;
    std::string open;  // "", "reasoning", "message"
    std::string item_id, text;
    ojson done_items = ojson::array();
  };
  auto st = std::make_shared<State>();
  stream_sse(res, run, [=](std::string& out) -> bool {
    auto ev = [&](const std::string& type, ojson j) {
      ojson e;
      e["type"] = type;
      e["sequence_number"] = st->seq++;
      for (auto it = j.begin(); it != j.end(); ++it) e[it.key()] = it.value();
      out += sse_event(type, e);
    };
    if (!st->started) {
      st->started = true;
      ev("response.created", {{"response", response_obj("in_progress", ojson::array())}});
      ev("response.in_progress", {{"response", response_obj("in_progress", ojson::array())}});
    }
    auto close = [&]() {
      if (st->open == "reasoning") {
        ev("response.reasoning_text.done", {{"item_id", st->item_id},
                                            {"output_index", st->out_index},
                                            {"content_index", 0},
                                            {"text", st->text}});
        ojson item = reasoning_item(st->item_id, st->text);
        ev("response.output_item.done", {{"output_index", st->out_index}, {"item", item}});
        st->done_items.push_back(item);
      } else if (st->open == "message") {
        ojson part = {{"type", "output_text"}, {"text", st->text}, {"annotations", ojson::array()}};
        ev("response.output_text.done", {{"item_id", st->item_id},
                                         {"output_index", st->out_index},
                                         {"content_index", 0},
                                         {"text", st->text}});
        ev("response.content_part.done", {{"item_id", st->item_id},
                                          {"output_index", st->out_index},
                                          {"content_index", 0},
                                          {"part", part}});
        ojson item = message_item(st->item_id, st->text, "completed");
        ev("response.output_item.done", {{"output_index", st->out_index}, {"item", item}});
        st->done_items.push_back(item);
      }
      st->open.clear();
      st->text.clear();
    };
    auto open = [&](const std::string& kind) {
      if (st->open == kind) return;
      close();
      st->open = kind;
      ++st->out_index;
      if (kind == "reasoning") {
        st->item_id = random_id("rs_");
        ev("response.output_item.added", {{"output_index", st->out_index},
                                          {"item",
                                           {{"type", "reasoning"},
                                            {"id", st->item_id},
                                            {"summary", ojson::array()},
                                            {"content", ojson::array()}}}});
      } else {
        st->item_id = random_id("msg_");
        ev("response.output_item.added", {{"output_index", st->out_index},
                                          {"item", message_item(st->item_id, "", "in_progress")}});
        ev("response.content_part.added",
           {{"item_id", st->item_id},
            {"output_index", st->out_index},
            {"content_index", 0},
            {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", ojson::array()}}}});
      }
    };
    std::vector<RunEvent> evs;
    const bool fin = run->poll(evs, std::chrono::milliseconds(100));
    for (auto& e : evs) {
      if (e.type == RunEvent::Type::kReasoning) {
        open("reasoning");
        st->text += e.text;
        ev("response.reasoning_text.delta", {{"item_id", st->item_id},
                                             {"output_index", st->out_index},
                                             {"content_index", 0},
                                             {"delta", e.text}});
      } else if (e.type == RunEvent::Type::kContent) {
        open("message");
        st->text += e.text;
        ev("response.output_text.delta", {{"item_id", st->item_id},
                                          {"output_index", st->out_index},
                                          {"content_index", 0},
                                          {"delta", e.text},
                                          {"logprobs", ojson::array()}});
      } else {
        close();
        ++st->out_index;
        const std::string fid = random_id("fc_");
        ev("response.output_item.added",
           {{"output_index", st->out_index},
            {"item", call_item(fid, e.tool_id, e.tool_name, "", "in_progress")}});
        ev("response.function_call_arguments.delta",
           {{"item_id", fid}, {"output_index", st->out_index}, {"delta", e.tool_args}});
        ev("response.function_call_arguments.done",
           {{"item_id", fid}, {"output_index", st->out_index}, {"arguments", e.tool_args}});
        ojson item = call_item(fid, e.tool_id, e.tool_name, e.tool_args, "completed");
        ev("response.output_item.done", {{"output_index", st->out_index}, {"item", item}});
        st->done_items.push_back(item);
      }
    }
    if (!fin) return true;
    try {
      run->check_failure();
    } catch (const ApiError& e) {
      ojson r = response_obj("failed", st->done_items);
      r["error"] = {{"code", e.code.empty() ? error_type_for(e.status) : e.code},
                    {"message", e.what()}};
      ev("response.failed", {{"response", r}});
      return false;
    }
    if (st->out_index < 0) open("message");
    close();
    ojson r = finish_obj(*run, st->done_items);
    ev(r["status"] == "completed" ? "response.completed" : "response.incomplete",
       {{"response", r}});
    return false;
  });
}

}  // namespace dsv4::server
