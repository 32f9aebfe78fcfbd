#include "runtime/token_constraint.h"

#include <algorithm>

#include "util/error.h"

namespace dsv4 {

VocabIndex::VocabIndex(const tok::Tokenizer& tok) : tok_(tok) {
  const size_t n = tok_.vocab_size();
  sorted_.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    std::string_view b = tok_.token_bytes(static_cast<int32_t>(id));
    if (!b.empty()) sorted_.emplace_back(b, static_cast<int32_t>(id));
  }
  std::sort(sorted_.begin(), sorted_.end());
}

static auto first_not_below(const std::vector<std::pair<std::string_view, int32_t>>& v,
                            std::string_view s) {
  return std::lower_bound(v.begin(), v.end(), s,
                          [](const auto& e, std::string_view x) { return e.first < x; });
}

void VocabIndex::equal_to(std::string_view s, std::vector<int32_t>& out) const {
  auto it = first_not_below(sorted_, s);
  for (; it != sorted_.end() && it->first == s; ++it) out.push_back(it->second);
}

void VocabIndex::starting_with(std::string_view p, std::vector<int32_t>& out) const {
  // Strings that start with p sort together, right from p itself.
  auto it = first_not_below(sorted_, p);
  for (; it != sorted_.end() && it->first.substr(0, p.size()) == p; ++it) out.push_back(it->second);
}

ChoiceConstraint::ChoiceConstraint(std::shared_ptr<const VocabIndex> vocab,
                                   std::vector<std::string> choices)
    : vocab_(std::move(vocab)), choices_(std::move(choices)) {
  if (!vocab_) throw Error("ChoiceConstraint: no vocabulary index");
  if (choices_.empty()) throw Error("ChoiceConstraint: no choices");
  for (const std::string& c : choices_)
    if (c.empty()) throw Error("ChoiceConstraint: an empty choice");
}

void ChoiceConstraint::allowed(std::string_view written, std::vector<int32_t>& out) const {
  out.clear();
  for (const std::string& c : choices_) {
    if (c.size() <= written.size() || c.compare(0, written.size(), written) != 0) continue;
    const std::string_view rest = std::string_view(c).substr(written.size());
    for (size_t k = 1; k < rest.size(); ++k) vocab_->equal_to(rest.substr(0, k), out);
    vocab_->starting_with(rest, out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

bool ChoiceConstraint::complete(std::string_view written) const {
  for (const std::string& c : choices_)
    if (written.substr(0, c.size()) == c) return true;
  return false;
}

}  // namespace dsv4
