// ChoiceConstraint against a scan of the whole V4 vocabulary, and the tokens that run past the
// end of a tool name.
#include "runtime/token_constraint.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4 {
namespace {

const tok::Tokenizer& v4_tokenizer() {
  static const tok::Tokenizer t = tok::Tokenizer::load(test::shared_dir() / "tokenizer");
  return t;
}

std::shared_ptr<const VocabIndex> v4_index() {
  static const auto index = std::make_shared<const VocabIndex>(v4_tokenizer());
  return index;
}

// What allowed() must return, by definition, from every id of the vocabulary.
std::vector<int32_t> scan(const tok::Tokenizer& tk, const std::vector<std::string>& choices,
                          const std::string& written) {
  std::vector<int32_t> out;
  for (size_t id = 0; id < tk.vocab_size(); ++id) {
    const std::string_view b = tk.token_bytes(static_cast<int32_t>(id));
    if (b.empty()) continue;
    const std::string s = written + std::string(b);
    for (const std::string& c : choices) {
      const bool on_the_way = s.size() <= c.size() && c.compare(0, s.size(), s) == 0;
      const bool past_the_end = s.size() > c.size() && s.compare(0, c.size(), c) == 0;
      if (on_the_way || past_the_end) {
        out.push_back(static_cast<int32_t>(id));
        break;
      }
    }
  }
  return out;
}

TEST(ChoiceConstraint, AllowsExactlyTheTokensAScanOfTheVocabularyFinds) {
  const tok::Tokenizer& tk = v4_tokenizer();
  const std::vector<std::string> choices = {"get_weather\">\n", "get_time\">\n",
                                            "get_time_zone\">\n", "météo\">\n"};
  const ChoiceConstraint c(v4_index(), choices);
  std::vector<int32_t> got;
  // Every prefix of every choice, the whole choices excepted (complete() ends them).
  for (const std::string& choice : choices) {
    for (size_t k = 0; k < choice.size(); ++k) {
      const std::string written = choice.substr(0, k);
      c.allowed(written, got);
      EXPECT_EQ(got, scan(tk, choices, written)) << "after \"" << written << "\"";
      EXPECT_FALSE(got.empty()) << "after \"" << written << "\"";
      EXPECT_FALSE(c.complete(written));
    }
    EXPECT_TRUE(c.complete(choice));
    EXPECT_TRUE(c.complete(choice + "<"));
  }
  // Text on the way to no choice allows nothing.
  c.allowed("get_stock", got);
  EXPECT_TRUE(got.empty());
}

TEST(ChoiceConstraint, TokensMayRunPastTheEndOfAName) {
  const tok::Tokenizer& tk = v4_tokenizer();
  const ChoiceConstraint c(v4_index(), {"get_time\">\n"});
  std::vector<int32_t> got;
  c.allowed("get_tim", got);
  auto has = [&](const std::string& piece) {
    const std::vector<int32_t> ids = tk.encode(piece);
    EXPECT_EQ(ids.size(), 1u) << "\"" << piece << "\" is not one token";
    return ids.size() == 1 && std::binary_search(got.begin(), got.end(), ids[0]);
  };
  EXPECT_TRUE(has("e"));
  EXPECT_FALSE(has("\""));
  EXPECT_FALSE(has("s"));
  // Whatever the vocabulary holds that spans the end of the name, the closing quote and beyond.
  for (int32_t id : got) {
    const std::string_view b = tk.token_bytes(id);
    EXPECT_TRUE(std::string("e\">\n").starts_with(b) || b.starts_with("e\">\n")) << b;
  }
  c.allowed("get_time", got);
  EXPECT_TRUE(has("\""));
  EXPECT_TRUE(has("\">"));  // the quote and the tag's end in one token
  EXPECT_TRUE(has("\">\n"));
  EXPECT_FALSE(has(" "));
  EXPECT_FALSE(has("s"));
  EXPECT_EQ(got, scan(tk, {"get_time\">\n"}, "get_time"));
}

TEST(ChoiceConstraint, RejectsNoChoicesAndEmptyOnes) {
  EXPECT_THROW(ChoiceConstraint(v4_index(), {}), Error);
  EXPECT_THROW(ChoiceConstraint(v4_index(), {"a", ""}), Error);
  EXPECT_THROW(ChoiceConstraint(nullptr, {"a"}), Error);
}

}  // namespace
}  // namespace dsv4
