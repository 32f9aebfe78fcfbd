// DeepSeek-V4 chat encoding: the C++ equivalent of DeepSeek's official `encoding_dsv4.py`
// (`encode_messages`), byte-exact on every case of ../shared/tokenizer/golden_chat.jsonl. Rules:
// ../shared/docs/tokenizer.md §5 and v4-spec.md §9.2–9.3.
//
// Input is an OpenAI-style message list as nlohmann::ordered_json (object key order matters: tool
// schemas and arguments are re-serialised in their original order, as Python dicts do). Roles:
// system, user, assistant (content, reasoning_content, tool_calls, wo_eos), tool (tool_call_id,
// content), developer, latest_reminder. `tools` / `response_format` may sit on a system or
// developer message, as in the official encoder.
//
// Where the official encoder would crash or silently accept nonsense, we throw dsv4::Error with the
// offending field named ("messages[3].role: unknown role \"bot\""): messages not a list, a message
// not an object, unknown role, a tool message whose tool_call_id matches no call of the preceding
// assistant message (or that has no preceding assistant tool call), developer without content,
// unknown task, tool call without a function name. Deliberate extensions (documented, no
// effect on the official cases): `content` given as a list of OpenAI text parts is joined; a null
// content renders as "" (Python would print "None"); tool-call `arguments` given as a JSON object
// (instead of a string) is used as is; `reasoning` is accepted as an alias of
// `reasoning_content`.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::tok {
class Tokenizer;
}

namespace dsv4::api {

using ojson = nlohmann::ordered_json;

// Special-token strings of the V4 chat format.
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";
inline constexpr std::string_view kUserTok = "<｜User｜>";
inline constexpr std::string_view kAssistantTok = "<｜Assistant｜>";
inline constexpr std::string_view kLatestReminderTok = "<｜latest_reminder｜>";

enum class ReasoningEffort { kNone, kHigh, kMax };

// "none", "" , "high", "max" (also "low"/"medium" as none); throws dsv4::Error otherwise.
ReasoningEffort parse_reasoning_effort(std::string_view s);

struct ChatOptions {
  bool thinking = false;  // thinking_mode "thinking" (true) or "chat" (false)
  ReasoningEffort reasoning_effort = ReasoningEffort::kNone;  // only kMax changes the prompt
  bool drop_thinking = true;  // drop reasoning of turns before the last user turn
  bool add_bos = true;        // add_default_bos_token
  // Request-level tools (OpenAI list of {"type":"function","function":{...}}) and
  // response_format, as an API server receives them. When set they are attached to the first
  // message if it is a system message, else to a new empty system message put in front; leave
  // them null when the messages already carry them.
  ojson tools;
  ojson response_format;
};

// The prompt text (official encode_messages(messages, thinking_mode, drop_thinking=...,
// add_default_bos_token=..., reasoning_effort=...)). Throws dsv4::Error on invalid input.
std::string render_chat(const ojson& messages, const ChatOptions& opts = {});

// render_chat + tokenize (the markers in the prompt become their special ids).
std::vector<int32_t> encode_chat(const tok::Tokenizer& tokenizer, const ojson& messages,
                                 const ChatOptions& opts = {});

// Python's json.dumps(value, ensure_ascii=False) with default separators (", " and ": "),
// key order kept, floats as Python's repr. Throws dsv4::Error for binary values.
std::string python_json_dumps(const ojson& value);

// The DSML block the encoder writes for an OpenAI tool_calls list, starting with "\n\n<｜DSML｜"
// (empty string for an empty list). `where` names the field in error messages.
std::string render_tool_calls(const ojson& tool_calls, const std::string& where = "tool_calls");

}  // namespace dsv4::api
