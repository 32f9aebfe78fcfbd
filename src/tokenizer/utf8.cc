#include "tokenizer/utf8.h"

#include <cstdint>

namespace dsv4::tok {
namespace {

// Length of the well-formed prefix (1..4) of the sequence starting at s[i] if it is complete,
// or a negative value -k where k is how many bytes form a valid-so-far prefix (k >= 1 means the
// lead byte alone or lead + some continuations are valid but the input ended or broke off).
// Follows Table 3-7 of the Unicode standard (well-formed UTF-8 byte sequences).
struct SeqInfo {
  int complete;  // > 0: whole well-formed sequence length
  int prefix;    // when complete == 0: number of bytes forming a valid prefix (>= 0)
  bool truncated_by_end;  // the prefix stopped because the input ended
};

SeqInfo scan_seq(const uint8_t* p, size_t n) {
  uint8_t b0 = p[0];
  if (b0 < 0x80) return {1, 0, false};
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, 0, false};
  }
  int k = 1;
  for (; k < need; ++k) {
    if (static_cast<size_t>(k) >= n) return {0, k, true};
    uint8_t b = p[k];
    uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {0, k, false};
  }
  return {need, 0, false};
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    SeqInfo si = scan_seq(p + i, n - i);
    if (si.complete == 0) return i;
    i += si.complete;
  }
  return std::string_view::npos;
}

size_t incomplete_utf8_tail(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size();
  // A lead byte of an unfinished sequence sits at most 3 bytes from the end.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    size_t i = n - back;
    uint8_t b = p[i];
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking for the lead
    if (b < 0xC2) return 0;
    SeqInfo si = scan_seq(p + i, back);
    return (si.complete == 0 && si.truncated_by_end) ? back : 0;
  }
  return 0;
}

void append_utf8_lossy(std::string& out, std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t n = bytes.size(), i = 0, run = 0;
  out.reserve(out.size() + n);
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    SeqInfo si = scan_seq(p + i, n - i);
    if (si.complete > 0) {
      i += si.complete;
      continue;
    }
    out.append(bytes.data() + run, i - run);
    out.append("\xEF\xBF\xBD");
    i += si.prefix > 0 ? si.prefix : 1;
    run = i;
  }
  out.append(bytes.data() + run, n - run);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace dsv4::tok
