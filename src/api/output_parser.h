// Parsing DeepSeek-V4 model output (the text after the prompt) into an OpenAI-shaped assistant
// message: reasoning_content (thinking mode: everything up to </think>), content, and tool calls
// written in DSML:
//
//   \n\n<｜DSML｜tool_calls>\n
//   <｜DSML｜invoke name="NAME">\n
//   <｜DSML｜parameter name="K" string="true|false">VALUE</｜DSML｜parameter>\n ...
//   </｜DSML｜invoke>\n ... </｜DSML｜tool_calls>   then <｜end▁of▁sentence｜>
//
// One state machine serves both uses: OutputParser is fed text pieces as they are decoded (any
// split, even inside a marker or a UTF-8 character) and returns events; parse_completion() runs it
// over a whole text. So streamed and whole-text results are always the same.
//
// Guarantees: no exception escapes push()/finish(). Content events never contain DSML markup from
// a well-formed block, nor a partial marker: only a suffix that could still grow into
// "</think>", "\n\n<｜DSML｜tool_calls" or "<｜end▁of▁sentence｜>" (or an unfinished UTF-8
// character) is held back. A tool_calls block is all-or-nothing: its calls are emitted when the
// closing </｜DSML｜tool_calls> arrives and the whole block parsed; a block that breaks the
// grammar (or is cut off by EOS / finish()) is returned verbatim as content with `malformed` set —
// nothing is dropped (except with OutputParserOptions::tool_call_forced, see there). Text after the
// tool calls or after EOS is also kept as malformed content. Tool-call arguments are a JSON object
// text built like the official parser: string="true" values are JSON-quoted, string="false" values
// are kept verbatim (and must be valid JSON). Round trip: render_chat() of the parsed message
// reproduces the parsed text exactly when the text is well formed.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/chat_encoder.h"

namespace dsv4::api {

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON object text, e.g. {"location": "Beijing", "days": 3}
};

struct ParsedCompletion {
  std::string reasoning_content;  // thinking mode only
  std::string content;
  std::vector<ToolCall> tool_calls;
  bool finished = false;   // <｜end▁of▁sentence｜> was seen (false: cut off, e.g. max tokens)
  bool malformed = false;  // some markup did not parse and is included in `content` verbatim
  // tool_call_forced only: the tool calls come from a block that did not parse to its end.
  bool tool_calls_incomplete = false;
  std::string error;  // first problem noticed (malformed markup, unclosed reasoning), or ""

  // {"role": "assistant", "content": ..., ["reasoning_content": ...,] ["tool_calls": [{"id",
  // "type": "function", "function": {"name", "arguments"}}]]}. content is null when empty and
  // there are tool calls (OpenAI convention); reasoning_content only when `with_reasoning`.
  ojson to_openai_message(bool with_reasoning) const;
};

struct OutputEvent {
  enum class Type {
    kReasoningDelta,     // text: reasoning delta
    kContentDelta,       // text: content delta; malformed: it is unparsed markup
    kToolCallStart,      // tool_index, tool_id, tool_name
    kToolCallArguments,  // tool_index, text: the complete arguments JSON (one delta per call)
  };
  Type type;
  std::string text;
  bool malformed = false;
  size_t tool_index = 0;
  std::string tool_id;
  std::string tool_name;
};

struct OutputParserOptions {
  bool thinking = false;  // the prompt ended with <think>: output starts with reasoning
  // The output was made to open a tool_calls block (a request whose tool_choice requires a call:
  // the server forces the opener). Such a block is a tool call whatever becomes of it, so it is
  // never returned as content: when it does not parse to its end (cut off by the token limit or
  // EOS, or markup that breaks the grammar), every invoke whose `name="…">` was complete is still
  // reported, with the parameters completed before the break as its arguments (always a JSON
  // object), tool_calls_incomplete is set, and the rest of the output is dropped.
  bool tool_call_forced = false;
  // Makes the id of the n-th tool call of this completion (0-based). Default: "call_<n>"; servers
  // should pass something unique per request.
  std::function<std::string(size_t)> make_tool_call_id;
};

class OutputParser {
 public:
  explicit OutputParser(OutputParserOptions opts = {});

  // Feeds the next piece of generated text; returns the events it completes.
  std::vector<OutputEvent> push(std::string_view text) noexcept;
  // End of generation: releases anything held back (an unfinished block becomes malformed
  // content). Further push() calls after finish() are treated as text after the end.
  std::vector<OutputEvent> finish() noexcept;

  // Everything parsed so far (complete after finish()).
  const ParsedCompletion& message() const { return msg_; }

  // Where the pushed text went, for callers that map tokens to it (logprobs), in byte offsets
  // into the concatenation of everything pushed. The first settled() bytes are decided (released
  // as reasoning or content, or read as markup); the rest is held back.
  size_t settled() const { return pushed_ - buf_.size(); }
  // The ranges [begin, end) that were read as tool calls: a tool_calls block from its opening
  // "\n\n" to its closing tag, or, for a forced block that did not parse (see tool_call_forced),
  // from its opening to the end (end = npos). A block returned as content is not one of them.
  const std::vector<std::pair<size_t, size_t>>& tool_call_spans() const { return spans_; }

 private:
  // kDiscard: after a forced block that did not parse (see tool_call_forced).
  enum class State { kReasoning, kContent, kToolBlock, kAfterTools, kDone, kDiscard };
  void process(bool at_end, std::vector<OutputEvent>& ev);
  void emit_text(std::string_view text, bool malformed, std::vector<OutputEvent>& ev);
  void emit_call(std::string name, std::string arguments, std::vector<OutputEvent>& ev);
  void note_error(const std::string& e);

  OutputParserOptions opts_;
  State state_;
  bool content_malformed_ = false;  // set once text followed a tool_calls block
  std::string buf_;
  size_t pushed_ = 0;
  std::vector<std::pair<size_t, size_t>> spans_;
  ParsedCompletion msg_;
};

// Whole-text parse of one completion (with or without the trailing EOS).
ParsedCompletion parse_completion(std::string_view text, bool thinking);

}  // namespace dsv4::api
