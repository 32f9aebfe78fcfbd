#include "api/chat_encoder.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <set>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4::api {
namespace {

constexpr std::string_view kEffortMaxPreamble =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

std::string tools_section(const std::string& schemas) {
  const std::string d(kDsml);
  std::string s;
  s += "## Tools\n\n";
  s += "You have access to a set of tools to help answer the user's question. You can invoke tools "
       "by writing a \"<" +
       d + "tool_calls>\" block like the following:\n\n";
  s += "<" + d + "tool_calls>\n";
  s += "<" + d + "invoke name=\"$TOOL_NAME\">\n";
  s += "<" + d + "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" + d +
       "parameter>\n";
  s += "...\n";
  s += "</" + d + "invoke>\n";
  s += "<" + d + "invoke name=\"$TOOL_NAME2\">\n";
  s += "...\n";
  s += "</" + d + "invoke>\n";
  s += "</" + d + "tool_calls>\n\n";
  s += "String parameters should be specified as is and set `string=\"true\"`. For all other types "
       "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
       "`string=\"false\"`.\n\n";
  s +=
      "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
      "inside <think>...</think> BEFORE any tool calls or final response.\n\n";
  s += "Otherwise, output directly after </think> with tool calls or final response.\n\n";
  s += "### Available Tool Schemas\n\n";
  s += schemas;
  s += "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
       "tool calls.\n";
  return s;
}

const std::map<std::string, std::string, std::less<>>& task_tokens() {
  static const std::map<std::string, std::string, std::less<>> m = {
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"}};
  return m;
}

void dump_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Python's float repr: shortest round-trip digits, fixed notation for exponents in [-4, 16),
// scientific ("1e-05", "1.5e+16") otherwise, and always a ".0" on integral fixed values.
void dump_float(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v < 0 ? "-Infinity" : "Infinity";
    return;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (size_t i = 0; i < epos; ++i)
    if (sci[i] != '.') digits += sci[i];
  if (neg) out += '-';
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0.";
      out.append(static_cast<size_t>(-exp - 1), '0');
      out += digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits;
      out.append(static_cast<size_t>(exp + 1 - static_cast<int>(digits.size())), '0');
      out += ".0";
    } else {
      out += digits.substr(0, exp + 1);
      out += '.';
      out += digits.substr(exp + 1);
    }
  } else {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
}

void dump(std::string& out, const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null:
      out += "null";
      break;
    case ojson::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      break;
    case ojson::value_t::number_integer:
      out += std::to_string(v.get<int64_t>());
      break;
    case ojson::value_t::number_unsigned:
      out += std::to_string(v.get<uint64_t>());
      break;
    case ojson::value_t::number_float:
      dump_float(out, v.get<double>());
      break;
    case ojson::value_t::string:
      dump_string(out, v.get_ref<const std::string&>());
      break;
    case ojson::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        dump(out, e);
      }
      out += ']';
      break;
    }
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        dump_string(out, it.key());
        out += ": ";
        dump(out, it.value());
      }
      out += '}';
      break;
    }
    default:
      throw Error("cannot render a binary/discarded JSON value");
  }
}

bool truthy(const ojson* v) {
  if (!v || v->is_null()) return false;
  if (v->is_array() || v->is_object() || v->is_string()) return !v->empty();
  if (v->is_boolean()) return v->get<bool>();
  return true;
}

const ojson* field(const ojson& obj, std::string_view key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// obj[key] as a string; "" when absent or null; any other type is an error naming where.
std::string string_field(const ojson& obj, std::string_view key, const std::string& where) {
  const ojson* v = field(obj, key);
  if (!v || v->is_null()) return "";
  if (!v->is_string()) throw Error(where + "." + std::string(key) + ": not a string");
  return v->get<std::string>();
}

// Whether block b has this type; a block whose type is not a string has none.
bool has_type(const ojson& b, const char* type) {
  return b.is_object() && b.contains("type") && b["type"] == type;
}

// Text of a content value: a string, null (""), or a list of OpenAI text parts.
std::string content_text(const ojson* v, const std::string& where) {
  if (!v || v->is_null()) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array()) {
    std::string s;
    for (size_t i = 0; i < v->size(); ++i) {
      const ojson& part = (*v)[i];
      if (part.is_string()) {
        s += part.get<std::string>();
      } else if (has_type(part, "text") && part.contains("text") && part["text"].is_string()) {
        s += part["text"].get<std::string>();
      } else {
        throw Error(where + "[" + std::to_string(i) + "]: only text content parts are supported");
      }
    }
    return s;
  }
  throw Error(where + ": content must be a string, null or a list of text parts");
}

std::string role_of(const ojson& m) {
  const ojson* r = field(m, "role");
  return r && r->is_string() ? r->get<std::string>() : std::string();
}

std::string tool_call_id(const ojson& tc) {
  if (const ojson* id = field(tc, "id"); id && id->is_string() && !id->empty())
    return id->get<std::string>();
  if (const ojson* f = field(tc, "function"); f && f->is_object())
    if (const ojson* id = field(*f, "id"); id && id->is_string()) return id->get<std::string>();
  return "";
}

// merge_tool_messages: tool results (and a user message right after them) become one user turn
// made of content blocks. Also validates roles and tool_call ids.
ojson merge_tool_messages(const ojson& messages) {
  static const std::set<std::string, std::less<>> kRoles = {
      "system", "user", "assistant", "tool", "developer", "latest_reminder"};
  ojson merged = ojson::array();
  const ojson* last_calls = nullptr;  // tool_calls of the most recent assistant message
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const ojson& msg = messages[i];
    if (!msg.is_object()) throw Error(where + ": message is not a JSON object");
    const ojson* role_v = field(msg, "role");
    if (!role_v || !role_v->is_string()) throw Error(where + ".role: missing or not a string");
    const std::string role = role_v->get<std::string>();
    if (!kRoles.count(role)) throw Error(where + ".role: unknown role \"" + role + "\"");
    if (role == "assistant") {
      const ojson* tc = field(msg, "tool_calls");
      last_calls = tc && tc->is_array() && !tc->empty() ? tc : nullptr;
      merged.push_back(msg);
    } else if (role == "tool") {
      std::string id;
      if (const ojson* idv = field(msg, "tool_call_id"); idv && !idv->is_null()) {
        if (!idv->is_string()) throw Error(where + ".tool_call_id: not a string");
        id = idv->get<std::string>();
      }
      if (!last_calls)
        throw Error(where + ": tool result without a preceding assistant message with tool_calls");
      if (!id.empty()) {
        bool found = false;
        for (const auto& tc : *last_calls)
          found = found || (tc.is_object() && tool_call_id(tc) == id);
        if (!found)
          throw Error(where + ".tool_call_id: \"" + id +
                      "\" matches no tool call of the preceding assistant message");
      }
      ojson block = {{"type", "tool_result"}, {"tool_use_id", id}};
      const ojson* c = field(msg, "content");
      block["content"] = c ? *c : ojson("");
      if (!merged.empty() && role_of(merged.back()) == "user" &&
          merged.back().contains("content_blocks")) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        merged.push_back({{"role", "user"}, {"content_blocks", ojson::array({std::move(block)})}});
      }
    } else if (role == "user") {
      ojson block = {{"type", "text"},
                     {"text", content_text(field(msg, "content"), where + ".content")}};
      bool into_last = false;
      if (!merged.empty() && role_of(merged.back()) == "user" &&
          merged.back().contains("content_blocks")) {
        const ojson* t = field(merged.back(), "task");
        into_last = !t || t->is_null();
      }
      if (into_last) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        ojson nm = {{"role", "user"}, {"content", block["text"]}};
        nm["content_blocks"] = ojson::array({block});
        for (const char* k : {"task", "wo_eos", "mask"})
          if (msg.contains(k)) nm[k] = msg[k];
        merged.push_back(std::move(nm));
      }
    } else {
      merged.push_back(msg);
    }
  }
  return merged;
}

// Tool-result blocks follow the order of the preceding assistant's tool_calls (stable; ids not
// found sort as position 0, like the official encoder).
void sort_tool_results(ojson& messages) {
  std::map<std::string, int> order;
  for (auto& m : messages) {
    std::string role = role_of(m);
    if (role == "assistant" && truthy(field(m, "tool_calls")) && m["tool_calls"].is_array()) {
      order.clear();
      int idx = 0;
      for (const auto& tc : m["tool_calls"]) {
        if (tc.is_object()) {
          std::string id = tool_call_id(tc);
          if (!id.empty()) order[id] = idx;
        }
        ++idx;
      }
    } else if (role == "user" && m.contains("content_blocks")) {
      ojson& blocks = m["content_blocks"];
      std::vector<ojson> tool_blocks;
      for (const auto& b : blocks)
        if (has_type(b, "tool_result")) tool_blocks.push_back(b);
      if (tool_blocks.size() > 1 && !order.empty()) {
        auto key = [&](const ojson& b) {
          const ojson* id = field(b, "tool_use_id");
          auto it = id && id->is_string() ? order.find(id->get<std::string>()) : order.end();
          return it == order.end() ? 0 : it->second;
        };
        std::stable_sort(tool_blocks.begin(), tool_blocks.end(),
                         [&](const ojson& a, const ojson& b) { return key(a) < key(b); });
        size_t k = 0;
        for (auto& b : blocks)
          if (has_type(b, "tool_result")) b = tool_blocks[k++];
      }
    }
  }
}

int last_user_index(const ojson& messages) {
  for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
    std::string r = role_of(messages[i]);
    if (r == "user" || r == "developer") return i;
  }
  return -1;
}

std::string tools_and_format(const ojson& msg, const std::string& where) {
  std::string s;
  const ojson* tools = field(msg, "tools");
  if (truthy(tools)) {
    if (!tools->is_array()) throw Error(where + ".tools: not a list");
    std::string schemas;
    for (size_t i = 0; i < tools->size(); ++i) {
      const ojson& t = (*tools)[i];
      if (!t.is_object() || !t.contains("function"))
        throw Error(where + ".tools[" + std::to_string(i) + "]: missing \"function\"");
      if (i) schemas += '\n';
      schemas += python_json_dumps(t["function"]);
    }
    s += "\n\n" + tools_section(schemas);
  }
  const ojson* rf = field(msg, "response_format");
  if (truthy(rf)) {
    s += "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" +
         python_json_dumps(*rf);
  }
  return s;
}

std::string render_message(size_t index, const ojson& msgs, const ChatOptions& o, bool drop,
                           int last_user) {
  const ojson& msg = msgs[index];
  const std::string where = "messages[" + std::to_string(index) + "]";
  const std::string role = role_of(msg);
  std::string p;
  if (index == 0 && o.thinking && o.reasoning_effort == ReasoningEffort::kMax)
    p += kEffortMaxPreamble;

  if (role == "system") {
    p += content_text(field(msg, "content"), where + ".content");
    p += tools_and_format(msg, where);
  } else if (role == "developer") {
    std::string c = content_text(field(msg, "content"), where + ".content");
    if (c.empty()) throw Error(where + ".content: a developer message needs content");
    p += kUserTok;
    p += c;
    p += tools_and_format(msg, where);
  } else if (role == "user") {
    p += kUserTok;
    const ojson* blocks = field(msg, "content_blocks");
    for (size_t i = 0; i < blocks->size(); ++i) {
      const ojson& b = (*blocks)[i];
      const std::string bw = where + ".content_blocks[" + std::to_string(i) + "]";
      if (i) p += "\n\n";
      if (!b.is_object()) throw Error(bw + ": not a JSON object");
      std::string type = string_field(b, "type", bw);
      if (type == "text") {
        p += string_field(b, "text", bw);
      } else if (type == "tool_result") {
        const ojson* c = field(b, "content");
        std::string text;
        if (c && c->is_array()) {
          for (size_t j = 0; j < c->size(); ++j) {
            const ojson& part = (*c)[j];
            const std::string pw = bw + ".content[" + std::to_string(j) + "]";
            if (j) text += "\n\n";
            std::string pt = part.is_object() ? string_field(part, "type", pw) : "";
            if (pt == "text") {
              text += string_field(part, "text", pw);
            } else {
              text += "[Unsupported " + pt + "]";
            }
          }
        } else {
          text = content_text(c, bw + ".content");
        }
        p += "<tool_result>" + text + "</tool_result>";
      } else {
        p += "[Unsupported " + type + "]";
      }
    }
  } else if (role == "latest_reminder") {
    p += kLatestReminderTok;
    p += content_text(field(msg, "content"), where + ".content");
  } else if (role == "assistant") {
    std::string tc;
    if (const ojson* calls = field(msg, "tool_calls"); truthy(calls))
      tc = render_tool_calls(*calls, where + ".tool_calls");
    const ojson* rc = field(msg, "reasoning_content");
    if (!rc || rc->is_null()) rc = field(msg, "reasoning");
    bool prev_task =
        index > 0 && field(msgs[index - 1], "task") && !field(msgs[index - 1], "task")->is_null();
    if (o.thinking && !prev_task && (!drop || static_cast<int>(index) > last_user)) {
      p += content_text(rc, where + ".reasoning_content");
      p += kThinkEnd;
    }
    p += content_text(field(msg, "content"), where + ".content");
    p += tc;
    const ojson* wo = field(msg, "wo_eos");
    if (!truthy(wo)) p += kEos;
  } else {
    throw Error(where + ".role: unknown role \"" + role + "\"");
  }

  if (index + 1 < msgs.size()) {
    std::string next = role_of(msgs[index + 1]);
    if (next != "assistant" && next != "latest_reminder") return p;
  }
  const ojson* task = field(msg, "task");
  if (task && !task->is_null()) {
    if (!task->is_string() || !task_tokens().count(task->get<std::string>()))
      throw Error(where + ".task: unknown task " + task->dump());
    const std::string& tt = task_tokens().find(task->get<std::string>())->second;
    if (task->get<std::string>() != "action") {
      p += tt;
    } else {
      p += kAssistantTok;
      p += o.thinking ? kThinkStart : kThinkEnd;
      p += tt;
    }
  } else if (role == "user" || role == "developer") {
    p += kAssistantTok;
    bool think = o.thinking && (!drop || static_cast<int>(index) >= last_user);
    p += think ? kThinkStart : kThinkEnd;
  }
  return p;
}

}  // namespace

ReasoningEffort parse_reasoning_effort(std::string_view s) {
  if (s.empty() || s == "none" || s == "low" || s == "medium") return ReasoningEffort::kNone;
  if (s == "high") return ReasoningEffort::kHigh;
  if (s == "max") return ReasoningEffort::kMax;
  throw Error("reasoning_effort: \"" + std::string(s) + "\" is not one of none, high, max");
}

std::string python_json_dumps(const ojson& value) {
  std::string out;
  dump(out, value);
  return out;
}

std::string render_tool_calls(const ojson& tool_calls, const std::string& where) {
  if (!tool_calls.is_array()) throw Error(where + ": not a list");
  if (tool_calls.empty()) return "";
  const std::string d(kDsml);
  std::string invokes;
  for (size_t i = 0; i < tool_calls.size(); ++i) {
    const std::string w = where + "[" + std::to_string(i) + "]";
    const ojson& tc = tool_calls[i];
    const ojson* fn = tc.is_object() ? field(tc, "function") : nullptr;
    if (!fn || !fn->is_object()) throw Error(w + ".function: missing");
    const ojson* name = field(*fn, "name");
    if (!name || !name->is_string()) throw Error(w + ".function.name: missing or not a string");
    ojson args;
    const ojson* raw = field(*fn, "arguments");
    if (raw && raw->is_object()) {
      args = *raw;
    } else {
      std::string text = raw && raw->is_string() ? raw->get<std::string>() : "";
      // The official encoder json.loads() the string and falls back to one "arguments" param.
      args = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!args.is_object()) args = ojson{{"arguments", text}};
    }
    if (i) invokes += '\n';
    invokes += "<" + d + "invoke name=\"" + name->get<std::string>() + "\">\n";
    bool first = true;
    for (auto it = args.begin(); it != args.end(); ++it) {
      if (!first) invokes += '\n';
      first = false;
      bool is_str = it.value().is_string();
      invokes += "<" + d + "parameter name=\"" + it.key() + "\" string=\"" +
                 (is_str ? "true" : "false") + "\">";
      invokes += is_str ? it.value().get<std::string>() : python_json_dumps(it.value());
      invokes += "</" + d + "parameter>";
    }
    invokes += "\n</" + d + "invoke>";
  }
  return "\n\n<" + d + "tool_calls>\n" + invokes + "\n</" + d + "tool_calls>";
}

std::string render_chat(const ojson& messages_in, const ChatOptions& o) {
  if (!messages_in.is_array()) throw Error("messages: must be a JSON list of message objects");
  const ojson* src = &messages_in;
  ojson with_request_fields;
  if (!o.tools.is_null() || !o.response_format.is_null()) {
    with_request_fields = messages_in;
    if (with_request_fields.empty() || !with_request_fields[0].is_object() ||
        role_of(with_request_fields[0]) != "system") {
      with_request_fields.insert(with_request_fields.begin(),
                                 ojson{{"role", "system"}, {"content", ""}});
    }
    if (!o.tools.is_null()) with_request_fields[0]["tools"] = o.tools;
    if (!o.response_format.is_null()) with_request_fields[0]["response_format"] = o.response_format;
    src = &with_request_fields;
  }
  ojson msgs = merge_tool_messages(*src);
  sort_tool_results(msgs);

  bool drop = o.drop_thinking;
  for (const auto& m : msgs)
    if (truthy(field(m, "tools"))) drop = false;

  if (o.thinking && drop) {
    int lu = last_user_index(msgs);
    ojson kept = ojson::array();
    for (size_t i = 0; i < msgs.size(); ++i) {
      std::string r = role_of(msgs[i]);
      if (r == "user" || r == "system" || r == "tool" || r == "latest_reminder" ||
          static_cast<int>(i) >= lu) {
        kept.push_back(std::move(msgs[i]));
      } else if (r == "assistant") {
        ojson m = std::move(msgs[i]);
        m.erase("reasoning_content");
        m.erase("reasoning");
        kept.push_back(std::move(m));
      }  // earlier developer messages are dropped
    }
    msgs = std::move(kept);
  }

  std::string prompt = o.add_bos ? std::string(kBos) : std::string();
  int lu = last_user_index(msgs);
  for (size_t i = 0; i < msgs.size(); ++i) prompt += render_message(i, msgs, o, drop, lu);
  return prompt;
}

std::vector<int32_t> encode_chat(const tok::Tokenizer& tokenizer, const ojson& messages,
                                 const ChatOptions& opts) {
  return tokenizer.encode(render_chat(messages, opts));
}

}  // namespace dsv4::api
