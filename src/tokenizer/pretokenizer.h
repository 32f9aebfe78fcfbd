// The regex part of the HF pre-tokenizer: a chain of `Split` steps (behavior Isolated), each
// applied to every piece the previous step produced. Runs on PCRE2 (UTF + UCP, JIT when the
// library has it).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::tok {

// Rewrites an Oniguruma pattern (as found in tokenizer.json) for PCRE2: `\s` and `\S` become
// explicit classes of Unicode White_Space (Oniguruma's definition), because PCRE2's \s in UCP
// mode also matches U+180E. Throws dsv4::Error on constructs it cannot translate.
std::string onig_to_pcre2(std::string_view pattern);

class RegexSplitter {
 public:
  // `patterns` are PCRE2 patterns, applied in order. Throws dsv4::Error if one fails to compile.
  explicit RegexSplitter(const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Calls `emit` for every final piece of `text` (valid UTF-8), in order; the pieces concatenate
  // back to `text`. Pieces are never empty.
  template <typename F>
  void split(std::string_view text, F&& emit) const {
    split_level(0, text, [&](std::string_view piece) { emit(piece); });
  }

 private:
  using Emit = std::function<void(std::string_view)>;
  void split_level(size_t level, std::string_view text, const Emit& emit) const;
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> res_;
};

}  // namespace dsv4::tok
