#include "api/output_parser.h"

#include <algorithm>
#include <set>

#include "tokenizer/utf8.h"

namespace dsv4::api {
namespace {

const std::string kD(kDsml);
const std::string kOpener = "\n\n<" + kD + "tool_calls";
const std::string kBlockClose = "</" + kD + "tool_calls>";
const std::string kInvokeOpen = "<" + kD + "invoke name=\"";
const std::string kInvokeClose = "</" + kD + "invoke>";
const std::string kParamOpen = "<" + kD + "parameter name=\"";
const std::string kParamClose = "</" + kD + "parameter>";
const std::string kEosS(kEos);
const std::string kThinkEndS(kThinkEnd);

struct BlockResult {
  enum Status { kComplete, kIncomplete, kInvalid } status = kIncomplete;
  size_t end = 0;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments JSON
  std::string reason;
  // The invoke being read where the block ended or broke, if its `name="…">\n` was complete:
  // its name and the arguments JSON of the parameters completed before that point.
  std::string partial_name, partial_args;
};

std::string arguments_json(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string args = "{";
  for (size_t i = 0; i < params.size(); ++i) {
    if (i) args += ", ";
    args += python_json_dumps(ojson(params[i].first)) + ": " + params[i].second;
  }
  return args + "}";
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Strict recursive-descent parse of a tool_calls block at the start of `s` (which begins with
// kOpener). Reaching the end of `s` while everything so far fits the grammar is kIncomplete.
BlockResult parse_block(std::string_view s) {
  BlockResult r;
  size_t pos = 0;
  auto invalid = [&](const std::string& why) {
    r.status = BlockResult::kInvalid;
    r.reason = why + " at offset " + std::to_string(pos) + " of the tool_calls block";
    r.end = pos;
    return r;
  };
  // 0: matched, 1: input ended inside the literal, 2: mismatch.
  auto lit = [&](std::string_view l) {
    std::string_view rest = s.substr(pos);
    if (starts_with(rest, l)) {
      pos += l.size();
      return 0;
    }
    return (rest.size() < l.size() && starts_with(l, rest)) ? 1 : 2;
  };
  // Which of the literals comes next (index), -1 if the input ended inside a shared prefix, -2 if
  // none fits.
  auto choose = [&](std::initializer_list<std::string_view> ls) {
    std::string_view rest = s.substr(pos);
    int idx = 0;
    bool partial = false;
    for (auto l : ls) {
      if (starts_with(rest, l)) return idx;
      if (rest.size() < l.size() && starts_with(l, rest)) partial = true;
      ++idx;
    }
    return partial ? -1 : -2;
  };
#define DSV4_LIT(l, why)   \
  switch (lit(l)) {        \
    case 1:                \
      return r;            \
    case 2:                \
      return invalid(why); \
    default:               \
      break;               \
  }
  DSV4_LIT(kOpener, "expected tool_calls opener");
  DSV4_LIT(">\n", "expected '>\\n' after tool_calls");
  while (true) {
    int c = choose({kBlockClose, kInvokeOpen});
    if (c == -1) return r;
    if (c == -2) return invalid("expected <｜DSML｜invoke or </｜DSML｜tool_calls>");
    if (c == 0) {
      pos += kBlockClose.size();
      break;
    }
    pos += kInvokeOpen.size();
    size_t q = s.find('"', pos);
    size_t nl = s.find('\n', pos);
    if (nl != std::string_view::npos && (q == std::string_view::npos || nl < q))
      return invalid("newline in invoke name");
    if (q == std::string_view::npos) return r;
    std::string name(s.substr(pos, q - pos));
    if (name.empty()) return invalid("empty invoke name");
    pos = q;
    DSV4_LIT("\">\n", "expected '\">\\n' after invoke name");
    r.partial_name = name;
    r.partial_args = "{}";
    std::vector<std::pair<std::string, std::string>> params;  // name, JSON value text
    std::set<std::string> seen;
    int first = choose({"\n" + kInvokeClose, kParamOpen});
    if (first == -1) return r;
    if (first == -2) return invalid("expected <｜DSML｜parameter or </｜DSML｜invoke>");
    if (first == 0) {
      pos += 1 + kInvokeClose.size();
    } else {
      while (true) {
        DSV4_LIT(kParamOpen, "expected <｜DSML｜parameter");
        size_t pq = s.find('"', pos);
        if (pq == std::string_view::npos) {
          if (s.find('\n', pos) != std::string_view::npos) return invalid("bad parameter name");
          return r;
        }
        std::string pname(s.substr(pos, pq - pos));
        if (pname.empty() || pname.find('\n') != std::string::npos)
          return invalid("bad parameter name");
        pos = pq;
        DSV4_LIT("\" string=\"", "expected string=\"true|false\"");
        int flag = choose({"true\">", "false\">"});
        if (flag == -1) return r;
        if (flag == -2) return invalid("string= must be \"true\" or \"false\"");
        pos += flag == 0 ? 6 : 7;
        size_t vend = s.find(kParamClose, pos);
        if (vend == std::string_view::npos) return r;
        std::string_view value = s.substr(pos, vend - pos);
        std::string json_value;
        if (flag == 0) {
          json_value = python_json_dumps(ojson(std::string(value)));
        } else {
          ojson parsed = ojson::parse(value, nullptr, /*allow_exceptions=*/false);
          if (parsed.is_discarded())
            return invalid("parameter \"" + pname + "\" has string=\"false\" but is not JSON");
          json_value = std::string(value);
        }
        if (!seen.insert(pname).second) return invalid("duplicate parameter \"" + pname + "\"");
        params.emplace_back(pname, std::move(json_value));
        r.partial_args = arguments_json(params);
        pos = vend + kParamClose.size();
        DSV4_LIT("\n", "expected newline after parameter");
        int nx = choose({kInvokeClose, kParamOpen});
        if (nx == -1) return r;
        if (nx == -2) return invalid("expected <｜DSML｜parameter or </｜DSML｜invoke>");
        if (nx == 0) {
          pos += kInvokeClose.size();
          break;
        }
      }
    }
    r.calls.emplace_back(std::move(name), arguments_json(params));
    r.partial_name.clear();
    r.partial_args.clear();
    int nx = choose({"\n" + kInvokeOpen, "\n" + kBlockClose});
    if (nx == -1) return r;
    if (nx == -2) return invalid("expected a newline and the next invoke or the block end");
    pos += 1;
  }
#undef DSV4_LIT
  r.status = BlockResult::kComplete;
  r.end = pos;
  return r;
}

// Length of the longest proper suffix of `s` that is a prefix of one of `markers`.
size_t partial_marker_suffix(std::string_view s, std::initializer_list<std::string_view> markers) {
  size_t best = 0;
  for (auto m : markers) {
    size_t maxk = std::min(s.size(), m.size() - 1);
    for (size_t k = maxk; k > best; --k) {
      if (s.substr(s.size() - k) == m.substr(0, k)) {
        best = k;
        break;
      }
    }
  }
  return best;
}

}  // namespace

ojson ParsedCompletion::to_openai_message(bool with_reasoning) const {
  ojson m = {{"role", "assistant"}};
  if (content.empty() && !tool_calls.empty()) {
    m["content"] = nullptr;
  } else {
    m["content"] = content;
  }
  if (with_reasoning) m["reasoning_content"] = reasoning_content;
  if (!tool_calls.empty()) {
    ojson calls = ojson::array();
    for (const auto& tc : tool_calls) {
      calls.push_back({{"id", tc.id},
                       {"type", "function"},
                       {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
    }
    m["tool_calls"] = std::move(calls);
  }
  return m;
}

OutputParser::OutputParser(OutputParserOptions opts)
    : opts_(std::move(opts)), state_(opts_.thinking ? State::kReasoning : State::kContent) {}

void OutputParser::note_error(const std::string& e) {
  if (msg_.error.empty()) msg_.error = e;
}

void OutputParser::emit_text(std::string_view text, bool malformed, std::vector<OutputEvent>& ev) {
  if (text.empty()) return;
  OutputEvent e;
  if (state_ == State::kReasoning && !malformed) {
    e.type = OutputEvent::Type::kReasoningDelta;
    msg_.reasoning_content += text;
  } else {
    e.type = OutputEvent::Type::kContentDelta;
    malformed = malformed || content_malformed_;
    e.malformed = malformed;
    msg_.content += text;
    if (malformed) msg_.malformed = true;
  }
  e.text = std::string(text);
  // Merge with the previous event of the same kind so callers see fewer, larger deltas.
  if (!ev.empty() && ev.back().type == e.type && ev.back().malformed == e.malformed &&
      (e.type == OutputEvent::Type::kReasoningDelta ||
       e.type == OutputEvent::Type::kContentDelta)) {
    ev.back().text += e.text;
  } else {
    ev.push_back(std::move(e));
  }
}

void OutputParser::emit_call(std::string name, std::string arguments,
                             std::vector<OutputEvent>& ev) {
  const size_t idx = msg_.tool_calls.size();
  ToolCall tc{
      opts_.make_tool_call_id ? opts_.make_tool_call_id(idx) : "call_" + std::to_string(idx),
      std::move(name), std::move(arguments)};
  OutputEvent s;
  s.type = OutputEvent::Type::kToolCallStart;
  s.tool_index = idx;
  s.tool_id = tc.id;
  s.tool_name = tc.name;
  ev.push_back(s);
  OutputEvent a;
  a.type = OutputEvent::Type::kToolCallArguments;
  a.tool_index = idx;
  a.tool_id = tc.id;
  a.tool_name = tc.name;
  a.text = tc.arguments;
  ev.push_back(std::move(a));
  msg_.tool_calls.push_back(std::move(tc));
}

void OutputParser::process(bool at_end, std::vector<OutputEvent>& ev) {
  while (true) {
    switch (state_) {
      case State::kReasoning:
      case State::kContent: {
        const bool reasoning = state_ == State::kReasoning;
        size_t best = std::string::npos;
        int which = -1;  // 0: </think>, 1: opener, 2: EOS
        auto consider = [&](const std::string& m, int id) {
          size_t p = buf_.find(m);
          if (p != std::string::npos && p < best) {
            best = p;
            which = id;
          }
        };
        if (reasoning) consider(kThinkEndS, 0);
        consider(kOpener, 1);
        consider(kEosS, 2);
        if (which < 0) {
          size_t hold = 0;
          if (!at_end) {
            hold = reasoning ? partial_marker_suffix(buf_, {kThinkEndS, kOpener, kEosS})
                             : partial_marker_suffix(buf_, {kOpener, kEosS});
            hold = std::max(hold, tok::incomplete_utf8_tail(buf_));
          }
          emit_text(std::string_view(buf_).substr(0, buf_.size() - hold), false, ev);
          buf_.erase(0, buf_.size() - hold);
          if (at_end && reasoning) note_error("reasoning was not closed with </think>");
          return;
        }
        emit_text(std::string_view(buf_).substr(0, best), false, ev);
        buf_.erase(0, best);
        if (which == 0) {
          buf_.erase(0, kThinkEndS.size());
          state_ = State::kContent;
        } else if (which == 1) {
          if (reasoning) note_error("tool calls started before </think>");
          state_ = State::kToolBlock;
        } else {
          buf_.erase(0, kEosS.size());
          if (reasoning) note_error("reasoning was not closed with </think>");
          msg_.finished = true;
          state_ = State::kDone;
        }
        continue;
      }
      case State::kToolBlock: {
        size_t eos = buf_.find(kEosS);
        BlockResult r = parse_block(std::string_view(buf_).substr(0, eos));
        if (r.status == BlockResult::kIncomplete && (eos != std::string::npos || at_end)) {
          r.status = BlockResult::kInvalid;
          r.reason = eos != std::string::npos ? "tool_calls block cut off by end of sentence"
                                              : "tool_calls block truncated";
        }
        if (r.status == BlockResult::kIncomplete) return;
        if (r.status == BlockResult::kInvalid && opts_.tool_call_forced) {
          spans_.emplace_back(settled(), std::string::npos);
          note_error("malformed DSML: " + r.reason);
          msg_.tool_calls_incomplete = true;
          for (auto& [name, args] : r.calls) emit_call(std::move(name), std::move(args), ev);
          if (!r.partial_name.empty())
            emit_call(std::move(r.partial_name), std::move(r.partial_args), ev);
          state_ = State::kDiscard;
          continue;
        }
        if (r.status == BlockResult::kInvalid) {
          // The block text up to where the grammar broke goes out verbatim as flagged content;
          // scanning then resumes as ordinary content, so a later block or the EOS still counts.
          note_error("malformed DSML: " + r.reason);
          size_t upto = std::max(r.end, kOpener.size());
          if (r.reason.find("cut off") != std::string::npos ||
              r.reason.find("truncated") != std::string::npos) {
            upto = eos == std::string::npos ? buf_.size() : eos;
          }
          state_ = State::kContent;
          emit_text(std::string_view(buf_).substr(0, upto), true, ev);
          buf_.erase(0, upto);
          continue;
        }
        for (auto& [name, args] : r.calls) emit_call(std::move(name), std::move(args), ev);
        spans_.emplace_back(settled(), settled() + r.end);
        buf_.erase(0, r.end);
        state_ = State::kAfterTools;
        continue;
      }
      case State::kAfterTools: {
        if (starts_with(buf_, kEosS)) {
          buf_.erase(0, kEosS.size());
          msg_.finished = true;
          state_ = State::kDone;
          continue;
        }
        if (buf_.empty() || (!at_end && starts_with(kEosS, buf_))) return;
        // The official format allows nothing but EOS here; keep the text, flagged.
        note_error("text after the tool_calls block");
        content_malformed_ = true;
        state_ = State::kContent;
        continue;
      }
      case State::kDiscard: {
        if (buf_.find(kEosS) != std::string::npos) msg_.finished = true;
        const size_t hold = at_end || msg_.finished ? 0 : partial_marker_suffix(buf_, {kEosS});
        buf_.erase(0, buf_.size() - hold);
        return;
      }
      case State::kDone: {
        if (buf_.empty()) return;
        note_error("text after end of sentence");
        emit_text(buf_, true, ev);
        buf_.clear();
        return;
      }
    }
  }
}

std::vector<OutputEvent> OutputParser::push(std::string_view text) noexcept {
  std::vector<OutputEvent> ev;
  try {
    buf_ += text;
    pushed_ += text.size();
    process(false, ev);
  } catch (...) {
    // Only allocation failure can get here; keep the text rather than lose it.
    note_error("internal error while parsing");
  }
  return ev;
}

std::vector<OutputEvent> OutputParser::finish() noexcept {
  std::vector<OutputEvent> ev;
  try {
    process(true, ev);
    if (!buf_.empty()) {
      emit_text(buf_, true, ev);
      buf_.clear();
    }
  } catch (...) {
    note_error("internal error while parsing");
  }
  return ev;
}

ParsedCompletion parse_completion(std::string_view text, bool thinking) {
  OutputParserOptions o;
  o.thinking = thinking;
  OutputParser p(std::move(o));
  p.push(text);
  p.finish();
  return p.message();
}

}  // namespace dsv4::api
