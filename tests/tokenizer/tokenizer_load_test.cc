// Malformed tokenizer.json files must fail with a message naming the problem, never crash.
#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4::tok {
namespace {

std::string error_of(const std::string& tokenizer_json) {
  try {
    Tokenizer::from_json(tokenizer_json);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

const char* kPre =
    R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+|\\S+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})";

std::string byte_vocab() {
  // All 256 byte-level chars plus "ab".
  std::string v = "{";
  int next = 256, id = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s = (cp == '"' || cp == '\\') ? std::string("\\") + char(cp) : std::string(1, char(cp));
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    v += "\"" + s + "\": " + std::to_string(id++) + ", ";
  }
  v += "\"ab\": 256}";
  return v;
}

std::string tokenizer_with(const std::string& model) {
  return std::string(
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 257, \"content\": \"<x>\", "
             "\"special\": true}], \"normalizer\": null, ") +
         kPre + ", " + model + "}";
}

TEST(TokenizerLoad, MinimalWorks) {
  auto t = Tokenizer::from_json(tokenizer_with(
      "\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() + ", \"merges\": [\"a b\"]}"));
  EXPECT_EQ(t.encode("ab<x>b a"), (std::vector<int32_t>{256, 257, 'b', ' ', 'a'}))
      << "byte-level ids equal the byte values in the vocab built above";
}

TEST(TokenizerLoad, MissingModel) {
  EXPECT_NE(error_of(std::string("{") + kPre + "}").find("missing \"model\""), std::string::npos);
}

TEST(TokenizerLoad, NotJson) {
  EXPECT_NE(error_of("{\"model\": ").find("not valid JSON"), std::string::npos);
}

TEST(TokenizerLoad, BadMerges) {
  std::string e =
      error_of(tokenizer_with("\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() +
                              ", \"merges\": [\"a b\", \"ab\"]}"));
  EXPECT_NE(e.find("model.merges[1]"), std::string::npos) << e;
  e = error_of(tokenizer_with("\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() +
                              ", \"merges\": [\"a zz\"]}"));
  EXPECT_NE(e.find("not in model.vocab"), std::string::npos) << e;
  e = error_of(tokenizer_with("\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() +
                              ", \"merges\": [\"b c\"]}"));
  EXPECT_NE(e.find("merged token \"bc\""), std::string::npos) << e;
  e = error_of(tokenizer_with("\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() +
                              ", \"merges\": [17]}"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
}

TEST(TokenizerLoad, WrongModelType) {
  std::string e = error_of(tokenizer_with("\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}"));
  EXPECT_NE(e.find("only BPE"), std::string::npos) << e;
}

// A field of the wrong type is named (found by a mutation fuzzer: these were the JSON library's
// type_error with no location).
TEST(TokenizerLoad, MistypedFieldsAreNamed) {
  const std::string t = tokenizer_with("\"model\": {\"type\": \"BPE\", \"vocab\": " + byte_vocab() +
                                       ", \"merges\": []}");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string r = t;
    return r.replace(r.find(from), from.size(), to);
  };
  std::string e = error_of(with("\"special\": true", "\"special\": 1"));
  EXPECT_NE(e.find("added_tokens[0].special is not a boolean"), std::string::npos) << e;
  e = error_of(with("\"type\": \"BPE\"", "\"type\": true"));
  EXPECT_NE(e.find("model.type is not a string"), std::string::npos) << e;
  e = error_of(with("\"invert\": false", "\"invert\": \"no\""));
  EXPECT_NE(e.find("(Split).invert is not a boolean"), std::string::npos) << e;
  e = error_of(with("\"normalizer\": null", "\"normalizer\": [1]"));
  EXPECT_NE(e.find("normalizer [1] is unsupported"), std::string::npos) << e;
}

TEST(TokenizerLoad, MissingDirectory) {
  test::TempDir dir("tok-missing");
  EXPECT_THROW(Tokenizer::load(dir.path()), Error);
  std::ofstream(dir.path() / "tokenizer.json") << "[]";
  EXPECT_THROW(Tokenizer::load(dir.path()), Error);
}

}  // namespace
}  // namespace dsv4::tok
