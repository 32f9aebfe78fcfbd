#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace dsv4::tok {
namespace {

using json = nlohmann::json;

const Tokenizer& v4() {
  static const Tokenizer t = Tokenizer::load(test::shared_dir() / "tokenizer");
  return t;
}

std::vector<json> read_jsonl(const std::string& name) {
  std::ifstream f(test::shared_dir() / "tokenizer" / name);
  EXPECT_TRUE(f.good()) << name;
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

TEST(Tokenizer, Basics) {
  EXPECT_EQ(v4().vocab_size(), 129280u);
  EXPECT_EQ(v4().bos_id(), 0);
  EXPECT_EQ(v4().eos_id(), 1);
  EXPECT_EQ(v4().token_id("<think>"), 128821);
  EXPECT_EQ(v4().token_id("｜DSML｜"), 128825);
  EXPECT_EQ(v4().token_id("Ġthe"), 270);
  EXPECT_EQ(v4().token_id("no such token"), -1);
  EXPECT_TRUE(v4().is_special(0));
  EXPECT_FALSE(v4().is_special(270));
}

TEST(Tokenizer, SpecCheckVector) {
  std::vector<int32_t> want = {128803, 30594, 128804, 128821, 36101, 128822, 7624, 1};
  EXPECT_EQ(v4().encode("<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>"),
            want);
}

TEST(Tokenizer, GoldenEncodeAll538) {
  auto cases = read_jsonl("golden_encode.jsonl");
  ASSERT_EQ(cases.size(), 538u);
  int failures = 0;
  for (const auto& c : cases) {
    std::string text = c["text"];
    auto want = c["ids"].get<std::vector<int32_t>>();
    auto got = v4().encode(text);
    if (got != want) {
      ++failures;
      ADD_FAILURE() << "golden_encode i=" << c["i"] << " category=" << c["category"]
                    << " text=" << json(text).dump() << "\n want " << json(want).dump()
                    << "\n got  " << json(got).dump();
    }
    // Round trip: decode gives the text back.
    EXPECT_EQ(v4().decode(got), text) << "i=" << c["i"];
  }
  EXPECT_EQ(failures, 0);
}

TEST(Tokenizer, GoldenDecodeAll32) {
  auto cases = read_jsonl("golden_decode.jsonl");
  ASSERT_EQ(cases.size(), 32u);
  for (const auto& c : cases) {
    auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(v4().decode(ids, c["skip_special_tokens"].get<bool>()), c["text"].get<std::string>())
        << c["name"];
  }
}

TEST(Tokenizer, GoldenApiCounts) {
  auto cases = read_jsonl("golden_api_counts.jsonl");
  ASSERT_EQ(cases.size(), 5u);
  for (const auto& c : cases) {
    EXPECT_EQ(v4().encode(c["prompt"].get<std::string>()).size(),
              c["api_prompt_tokens"].get<size_t>())
        << c["name"];
  }
}

TEST(Tokenizer, StreamingDetokenizerMatchesDecode) {
  auto check = [](const std::vector<int32_t>& ids, bool skip) {
    StreamingDetokenizer sd(v4(), skip);
    std::string all;
    for (int32_t id : ids) {
      std::string piece = sd.push(id);
      EXPECT_TRUE(is_valid_utf8(piece));
      all += piece;
    }
    std::string tail = sd.flush();
    EXPECT_TRUE(is_valid_utf8(tail));
    all += tail;
    EXPECT_EQ(all, v4().decode(ids, skip)) << json(ids).dump();
  };
  for (const auto& c : read_jsonl("golden_encode.jsonl")) {
    check(c["ids"].get<std::vector<int32_t>>(), false);
  }
  for (const auto& c : read_jsonl("golden_decode.jsonl")) {
    check(c["ids"].get<std::vector<int32_t>>(), c["skip_special_tokens"].get<bool>());
  }
}

TEST(Tokenizer, StreamingHoldsBackPartialCharacter) {
  // 😀 is two tokens, the first ending mid-character.
  StreamingDetokenizer sd(v4());
  EXPECT_EQ(sd.push(28927), "");
  EXPECT_EQ(sd.push(225), "😀");
  EXPECT_EQ(sd.push(28927), "");
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, InvalidUtf8IsRejectedWithOffset) {
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {"abc\xFF", 3},
           {"ab\xC3", 2},            // truncated 2-byte sequence
           {"x\xC0\xAF", 1},         // overlong
           {"hi \xED\xA0\x80", 3},   // UTF-16 surrogate
           {"\xF4\x90\x80\x80", 0},  // above U+10FFFF
           {"ok\x80", 2}}) {
    try {
      v4().encode(text);
      ADD_FAILURE() << "accepted invalid UTF-8";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("byte offset " + std::to_string(offset)),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Tokenizer, UnknownIdInDecodeThrows) {
  std::vector<int32_t> ids = {5, 999999};
  EXPECT_THROW(v4().decode(ids), Error);
  EXPECT_THROW(StreamingDetokenizer(v4()).push(-1), Error);
}

TEST(Tokenizer, Utf8Helpers) {
  EXPECT_EQ(incomplete_utf8_tail("a\xE4\xBD"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("a\xE4"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("a\xE4\xBD\xA0"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xE0\x80"), 0u);  // can never complete
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98"), 3u);
  std::string out;
  append_utf8_lossy(out, "a\xE4\xBD" "b\xFF");
  EXPECT_EQ(out, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
}

}  // namespace
}  // namespace dsv4::tok
