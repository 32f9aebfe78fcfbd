// Constrained decoding over a small set of strings. While a ChoiceConstraint is active, only
// tokens that keep the text written since it began on the way to one of its strings may be
// sampled; it ends once a whole string has been written. The server uses it so that a tool call
// forced by tool_choice "required" names one of the declared tools (see force_tool_call in
// src/server/openai.cc and GenerationParams::after_forced).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace dsv4 {

// The tokenizer's token bytes sorted, so that the tokens that are a prefix of a string, or start
// with one, are found by binary search: a constrained step costs a few lookups per candidate
// string instead of a pass over the 129,280 ids. Built once per tokenizer and shared by every
// request (the server builds it at load).
class VocabIndex {
 public:
  explicit VocabIndex(const tok::Tokenizer& tok);

  std::string_view bytes(int32_t id) const { return tok_.token_bytes(id); }
  // Appends the ids whose bytes equal `s` (non-empty).
  void equal_to(std::string_view s, std::vector<int32_t>& out) const;
  // Appends the ids whose bytes start with `p` (non-empty), `p` itself included.
  void starting_with(std::string_view p, std::vector<int32_t>& out) const;

 private:
  tok::Tokenizer tok_;  // shares the tokenizer's immutable state, which the views point into
  std::vector<std::pair<std::string_view, int32_t>> sorted_;  // non-empty token bytes, id
};

class ChoiceConstraint {
 public:
  // Throws dsv4::Error if `choices` is empty or holds an empty string.
  ChoiceConstraint(std::shared_ptr<const VocabIndex> vocab, std::vector<std::string> choices);

  // The ids (ascending, no duplicates) that may follow `written`, the text produced since the
  // constraint began: those after which the text is still a prefix of a choice, or already
  // starts with a whole one (a token may run past the end of a choice: the constraint only
  // governs the choice itself).
  void allowed(std::string_view written, std::vector<int32_t>& out) const;
  // True once `written` starts with a whole choice: the constraint is over.
  bool complete(std::string_view written) const;
  std::string_view token_bytes(int32_t id) const { return vocab_->bytes(id); }
  const std::vector<std::string>& choices() const { return choices_; }

 private:
  std::shared_ptr<const VocabIndex> vocab_;
  std::vector<std::string> choices_;
};

}  // namespace dsv4
