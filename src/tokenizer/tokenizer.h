// DeepSeek-V4 tokenizer: Hugging Face `tokenizers` byte-level BPE, loaded from a model directory's
// tokenizer.json, reproducing HF's ids exactly (see ../shared/docs/tokenizer.md §4).
//
// Pipeline of encode(): added tokens are matched literally (leftmost-longest) on the raw text; each
// gap between them goes through the regex pre-tokenizer (the Split steps of tokenizer.json, run
// with PCRE2 in UTF+UCP mode and Oniguruma's `\s`), then ByteLevel + BPE merges. No BOS is added.
//
// Invalid UTF-8 policy: encode() rejects input that is not well-formed UTF-8 (overlongs,
// surrogates, truncated sequences, bytes C0/C1/F5..FF) by throwing dsv4::Error naming the byte
// offset of the first bad sequence. It never guesses: HF itself only ever sees valid Unicode.
// decode() is lossy like HF: byte sequences that do not form UTF-8 become U+FFFD ("maximal
// subpart" rule), so decoding any id list always yields valid UTF-8.
//
// A Tokenizer is cheap to copy (shared immutable state) and safe to use from several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::tok {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
};

class Tokenizer {
 public:
  // Loads `model_dir`/tokenizer.json (required) and `model_dir`/tokenizer_config.json (optional,
  // for bos/eos names). Throws dsv4::Error naming the file and field on anything malformed or
  // unsupported (missing model, non-BPE model, merges naming unknown tokens, unknown pre-tokenizer).
  static Tokenizer load(const std::filesystem::path& model_dir);
  // Same from the text of tokenizer.json (and optionally tokenizer_config.json); `origin` names
  // the source in error messages.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                             const std::string& origin = "tokenizer.json");

  // Token ids of `text` (no BOS/EOS added). Throws dsv4::Error on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Text of `ids`; `skip_special` drops ids whose added token is flagged special. Unknown ids
  // throw dsv4::Error.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Raw bytes of one token (may be a partial UTF-8 character); empty for unknown ids.
  std::string_view token_bytes(int32_t id) const;

  // Id of a vocabulary entry or added token written as its tokenizer.json string (byte-level
  // form for vocab entries, e.g. "Ġthe"; literal content for added tokens), or -1.
  int32_t token_id(std::string_view token) const;
  // Number of ids (max id + 1), 129280 for V4.
  size_t vocab_size() const;
  bool is_special(int32_t id) const;
  bool is_added(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  int32_t bos_id() const;  // from tokenizer_config.json when present, else <｜begin▁of▁sentence｜>
  int32_t eos_id() const;  // likewise <｜end▁of▁sentence｜>

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// Turns a stream of ids into text pieces, each valid UTF-8, whose concatenation equals
// tok.decode(all ids). A token ending inside a multi-byte character is held back until the
// character completes; flush() emits what is left (U+FFFD for an unfinished character).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tok, bool skip_special = false)
      : tok_(tok), skip_special_(skip_special) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsv4::tok
