#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util/error.h"

namespace dsv4::tok {
namespace {

// Unicode White_Space, which is what Oniguruma's \s matches in UTF-8 mode. Unlike PCRE2's UCP \s
// it excludes U+180E; U+FEFF and U+001C..U+001F are in neither.
constexpr const char* kWhiteSpaceBody =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

pcre2_match_data* thread_match_data() {
  // One small ovector serves every pattern: only the whole-match span is read.
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create(8, nullptr));
  return md.get();
}

}  // namespace

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char n = p[i + 1];
      if (n == 's') {
        out += in_class ? std::string(kWhiteSpaceBody) : "[" + std::string(kWhiteSpaceBody) + "]";
      } else if (n == 'S') {
        if (in_class) throw Error("pre-tokenizer regex: \\S inside a character class is unsupported");
        out += "[^" + std::string(kWhiteSpaceBody) + "]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' (or '^]') right after '[' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() {
    if (code) pcre2_code_free(code);
  }
};

RegexSplitter::RegexSplitter(const std::vector<std::string>& patterns) {
  for (const auto& pat : patterns) {
    auto c = std::make_unique<Compiled>();
    int err = 0;
    PCRE2_SIZE erroff = 0;
    c->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                            PCRE2_UTF | PCRE2_UCP, &err, &erroff, nullptr);
    if (!c->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error("pre-tokenizer regex does not compile at offset " + std::to_string(erroff) +
                  ": " + reinterpret_cast<const char*>(msg));
    }
    c->jit = pcre2_jit_compile(c->code, PCRE2_JIT_COMPLETE) == 0;
    res_.push_back(std::move(c));
  }
}

RegexSplitter::~RegexSplitter() = default;

void RegexSplitter::split_level(size_t level, std::string_view text, const Emit& emit) const {
  if (text.empty()) return;
  if (level == res_.size()) {
    emit(text);
    return;
  }
  const Compiled& re = *res_[level];
  pcre2_match_data* md = thread_match_data();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t n = text.size(), pos = 0, prev = 0;
  while (pos < n) {
    // Input was validated once up front, so UTF checks are skipped here.
    int rc = re.jit ? pcre2_jit_match(re.code, subject, n, pos, 0, md, nullptr)
                    : pcre2_match(re.code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0 && rc != 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error(std::string("pre-tokenizer regex match failed: ") +
                  reinterpret_cast<const char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) {  // empty match: step over one character, keep scanning
      pos = ms + 1;
      while (pos < n && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (ms > prev) split_level(level + 1, text.substr(prev, ms - prev), emit);
    split_level(level + 1, text.substr(ms, me - ms), emit);
    prev = pos = me;
  }
  if (prev < n) split_level(level + 1, text.substr(prev), emit);
}

}  // namespace dsv4::tok
