// UTF-8 helpers shared by the tokenizer, the streaming detokenizer and the output parser.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsv4::tok {

// Byte offset of the first ill-formed UTF-8 sequence in `s` (overlongs, surrogates and code
// points above U+10FFFF count as ill-formed), or std::string_view::npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

inline bool is_valid_utf8(std::string_view s) { return find_invalid_utf8(s) == std::string_view::npos; }

// Length of the trailing bytes of `s` that form an incomplete but so far well-formed UTF-8
// sequence (0..3): bytes that a later chunk could still complete into one character. Streaming
// code holds exactly these back so that every piece it emits is valid UTF-8.
size_t incomplete_utf8_tail(std::string_view s);

// Appends `bytes` to `out`, replacing every ill-formed subsequence with U+FFFD using the
// "maximal subpart" rule (the same as Rust's String::from_utf8_lossy, which HF tokenizers uses).
void append_utf8_lossy(std::string& out, std::string_view bytes);

// Appends the UTF-8 encoding of code point `cp` (must be a Unicode scalar value).
void append_utf8(std::string& out, char32_t cp);

}  // namespace dsv4::tok
