#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace dsv4::tok {
namespace {

using json = nlohmann::json;

// GPT-2 byte <-> unicode table used by the ByteLevel pre-tokenizer and decoder: printable bytes
// map to themselves, the 68 others to U+0100.. in byte order.
std::array<char32_t, 256> byte_to_unicode() {
  std::array<char32_t, 256> t{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    t[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return t;
}

// Reverse of the byte-level mapping for one token string. Like HF's ByteLevel decoder, a char
// outside the table (e.g. in "<｜begin▁of▁sentence｜>", which is also a vocab entry) stands for
// its own UTF-8 bytes.
void byte_level_to_bytes(std::string_view s, const std::unordered_map<char32_t, uint8_t>& rev,
                         std::string* out) {
  out->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    char32_t cp;
    size_t len;
    if (p[i] < 0x80) {
      cp = p[i];
      len = 1;
    } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < n) {
      cp = ((p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
      len = 2;
    } else {
      len = (p[i] & 0xF0) == 0xE0 ? 3 : (p[i] & 0xF8) == 0xF0 ? 4 : 1;
      out->append(s.substr(i, std::min(len, n - i)));
      i += len;
      continue;
    }
    auto it = rev.find(cp);
    if (it == rev.end()) {
      out->append(s.substr(i, len));
    } else {
      out->push_back(static_cast<char>(it->second));
    }
    i += len;
  }
}

// Open-addressing map from a pair of token ids to (merge rank, merged id).
class MergeTable {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  // Returns false if the pair is already present (HF keeps the first rank).
  bool insert(int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    uint64_t key = make_key(a, b);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty) {
        slots_[i] = Slot{key, rank, merged};
        return true;
      }
      if (slots_[i].key == key) return false;
    }
  }
  // Rank of the pair or UINT32_MAX; sets *merged.
  uint32_t find(int32_t a, int32_t b, int32_t* merged) const {
    uint64_t key = make_key(a, b);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) {
        *merged = s.merged;
        return s.rank;
      }
      if (s.key == kEmpty) return UINT32_MAX;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t merged = 0;
  };
  static uint64_t make_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t hash(uint64_t k) const { return ((k * 0x9E3779B97F4A7C15ull) >> 29) & mask_; }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error("cannot open " + p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  std::vector<std::string> id_bytes;  // raw bytes of each id (added tokens: their content)
  std::vector<uint8_t> id_flags;      // bit0: exists, bit1: added, bit2: special
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id;
  std::vector<AddedToken> added;
  std::array<int32_t, 256> byte_id{};
  MergeTable merges;
  std::unique_ptr<RegexSplitter> splitter;
  int32_t bos = -1, eos = -1;

  // Added-token trie over bytes: edges keyed by (node << 8 | byte).
  std::unordered_map<uint32_t, int32_t> trie_edges;
  std::vector<int32_t> trie_token;  // token id ending at node, or -1
  std::array<bool, 256> trie_first{};

  // Per-word BPE cache. Lookups use try_lock so that concurrent encoders never wait on it.
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash,
                             std::equal_to<>>
      cache;
  mutable std::vector<int32_t> cache_ids;

  void add_trie(const std::string& s, int32_t id) {
    int32_t node = 0;
    for (unsigned char c : s) {
      uint32_t key = (static_cast<uint32_t>(node) << 8) | c;
      auto it = trie_edges.find(key);
      if (it == trie_edges.end()) {
        int32_t nn = static_cast<int32_t>(trie_token.size());
        trie_token.push_back(-1);
        trie_edges.emplace(key, nn);
        node = nn;
      } else {
        node = it->second;
      }
    }
    trie_token[node] = id;
    if (!s.empty()) trie_first[static_cast<unsigned char>(s[0])] = true;
  }

  // Longest added token starting at text[pos]: returns its length (0 if none) and sets *id.
  size_t match_added(std::string_view text, size_t pos, int32_t* id) const {
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      uint32_t key = (static_cast<uint32_t>(node) << 8) | static_cast<unsigned char>(text[i]);
      auto it = trie_edges.find(key);
      if (it == trie_edges.end()) break;
      node = it->second;
      if (trie_token[node] >= 0) {
        best = i + 1 - pos;
        *id = trie_token[node];
      }
    }
    return best;
  }

  void bpe_small(std::vector<int32_t>& sym) const;
  void bpe_large(std::vector<int32_t>& sym) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_gap(std::string_view gap, std::vector<int32_t>& out) const;
};

// Repeatedly merges the lowest-ranked adjacent pair (leftmost on ties). Quadratic, but words are
// short and this beats heap bookkeeping for them.
void Tokenizer::Impl::bpe_small(std::vector<int32_t>& sym) const {
  size_t n = sym.size();
  std::array<uint32_t, 64> rank;
  std::array<int32_t, 64> merged;
  for (size_t i = 0; i + 1 < n; ++i) rank[i] = merges.find(sym[i], sym[i + 1], &merged[i]);
  while (n > 1) {
    size_t best = 0;
    uint32_t br = rank[0];
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < br) {
        br = rank[i];
        best = i;
      }
    }
    if (br == UINT32_MAX) break;
    sym[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) sym[i] = sym[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) rank[best - 1] = merges.find(sym[best - 1], sym[best], &merged[best - 1]);
    if (best + 1 < n) rank[best] = merges.find(sym[best], sym[best + 1], &merged[best]);
  }
  sym.resize(n);
}

// Heap + linked list version for long words (e.g. runs of spaces or long identifiers).
void Tokenizer::Impl::bpe_large(std::vector<int32_t>& sym) const {
  const int n = static_cast<int>(sym.size());
  std::vector<int> next(n), prev(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  struct Cand {
    uint32_t rank;
    int pos;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> pq;
  int32_t m = 0;
  for (int i = 0; i + 1 < n; ++i) {
    uint32_t r = merges.find(sym[i], sym[i + 1], &m);
    if (r != UINT32_MAX) pq.push({r, i});
  }
  while (!pq.empty()) {
    Cand c = pq.top();
    pq.pop();
    int p = c.pos;
    if (!alive[p] || next[p] < 0) continue;
    int q = next[p];
    uint32_t r = merges.find(sym[p], sym[q], &m);
    if (r != c.rank) continue;  // stale entry: the pair at p changed since it was queued
    sym[p] = m;
    alive[q] = false;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = p;
    if (prev[p] >= 0) {
      uint32_t r2 = merges.find(sym[prev[p]], sym[p], &m);
      if (r2 != UINT32_MAX) pq.push({r2, prev[p]});
    }
    if (next[p] >= 0) {
      uint32_t r2 = merges.find(sym[p], sym[next[p]], &m);
      if (r2 != UINT32_MAX) pq.push({r2, p});
    }
  }
  size_t w = 0;
  for (int i = 0; i >= 0 && i < n; i = next[i]) sym[w++] = sym[i];
  sym.resize(w);
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  constexpr size_t kMaxCachedWord = 64;
  constexpr size_t kMaxCacheEntries = 1 << 20;
  const bool cacheable = word.size() <= kMaxCachedWord;
  if (cacheable) {
    std::unique_lock lock(cache_mu, std::try_to_lock);
    if (lock.owns_lock()) {
      auto it = cache.find(word);
      if (it != cache.end()) {
        out.insert(out.end(), cache_ids.begin() + it->second.first,
                   cache_ids.begin() + it->second.first + it->second.second);
        return;
      }
    }
  }
  thread_local std::vector<int32_t> sym;
  sym.clear();
  for (unsigned char c : word) sym.push_back(byte_id[c]);
  if (sym.size() <= 64) {
    bpe_small(sym);
  } else {
    bpe_large(sym);
  }
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::unique_lock lock(cache_mu, std::try_to_lock);
    if (lock.owns_lock()) {
      if (cache.size() >= kMaxCacheEntries) {
        cache.clear();
        cache_ids.clear();
      }
      cache.emplace(std::string(word),
                    std::pair<uint32_t, uint32_t>(static_cast<uint32_t>(cache_ids.size()),
                                                  static_cast<uint32_t>(sym.size())));
      cache_ids.insert(cache_ids.end(), sym.begin(), sym.end());
    }
  }
}

void Tokenizer::Impl::encode_gap(std::string_view gap, std::vector<int32_t>& out) const {
  if (gap.empty()) return;
  if (!splitter) {
    encode_word(gap, out);
    return;
  }
  splitter->split(gap, [&](std::string_view piece) { encode_word(piece, out); });
}

Tokenizer Tokenizer::load(const std::filesystem::path& model_dir) {
  auto tj = model_dir / "tokenizer.json";
  if (!std::filesystem::exists(tj)) throw Error("no tokenizer.json in " + model_dir.string());
  std::string text = read_file(tj);
  std::string cfg;
  auto cj = model_dir / "tokenizer_config.json";
  if (std::filesystem::exists(cj)) cfg = read_file(cj);
  return from_json(text, cfg, tj.string());
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                               const std::string& origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  json j;
  try {
    j = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    throw Error(origin + ": not valid JSON: " + printable(e.what()));
  }
  auto fail = [&](const std::string& what) -> Error { return Error(origin + ": " + what); };
  if (!j.is_object()) throw fail("top level is not an object");
  // obj[key] (obj named `where`) as a string or a boolean; `dflt` when absent or null, an error
  // naming the field when of another type.
  auto opt_string = [&](const json& obj, const char* key, const std::string& dflt,
                        const std::string& where) -> std::string {
    if (!obj.contains(key) || obj[key].is_null()) return dflt;
    if (!obj[key].is_string()) throw fail(where + "." + key + " is not a string");
    return obj[key].get<std::string>();
  };
  auto opt_bool = [&](const json& obj, const char* key, bool dflt, const std::string& where) {
    if (!obj.contains(key) || obj[key].is_null()) return dflt;
    if (!obj[key].is_boolean()) throw fail(where + "." + key + " is not a boolean");
    return obj[key].get<bool>();
  };

  // --- model ---
  if (!j.contains("model") || !j["model"].is_object()) throw fail("missing \"model\" object");
  const json& model = j["model"];
  if (const std::string type = opt_string(model, "type", "BPE", "model"); type != "BPE")
    throw fail("model.type is \"" + type + "\", only BPE is supported");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw fail("missing model.vocab object");
  if (!model.contains("merges") || !model["merges"].is_array())
    throw fail("missing model.merges array");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0.0)
    throw fail("model.dropout is unsupported");
  if (opt_bool(model, "byte_fallback", false, "model"))
    throw fail("model.byte_fallback is unsupported");

  auto b2u = byte_to_unicode();
  std::unordered_map<char32_t, uint8_t> u2b;
  for (int b = 0; b < 256; ++b) u2b[b2u[b]] = static_cast<uint8_t>(b);

  size_t max_id = 0;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      throw fail("model.vocab[\"" + it.key() + "\"] is not a non-negative integer");
    max_id = std::max<size_t>(max_id, it.value().get<size_t>());
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_array())
    throw fail("added_tokens is not an array");
  const json added_tokens = j.value("added_tokens", json::array());
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const json& t = added_tokens[i];
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        t["id"].get<int64_t>() < 0 || !t.contains("content") || !t["content"].is_string())
      throw fail("added_tokens[" + std::to_string(i) + "] needs an integer id and string content");
    max_id = std::max<size_t>(max_id, t["id"].get<size_t>());
  }
  if (max_id >= (1u << 24)) throw fail("token ids above 16M are unsupported");
  impl->id_bytes.assign(max_id + 1, std::string());
  impl->id_flags.assign(max_id + 1, 0);

  std::string bytes;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    int32_t id = it.value().get<int32_t>();
    byte_level_to_bytes(it.key(), u2b, &bytes);
    impl->id_bytes[id] = bytes;
    impl->id_flags[id] |= 1;
    impl->token_to_id[it.key()] = id;
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, b2u[b]);
    auto it = impl->token_to_id.find(s);
    if (it == impl->token_to_id.end())
      throw fail("model.vocab lacks the byte-level token for byte " + std::to_string(b));
    impl->byte_id[b] = it->second;
  }

  const json& merges = model["merges"];
  impl->merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw fail("model.merges[" + std::to_string(r) + "] \"" + s + "\" is not \"A B\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      throw fail("model.merges[" + std::to_string(r) + "] is neither \"A B\" nor [A, B]");
    }
    auto ia = impl->token_to_id.find(a), ib = impl->token_to_id.find(b),
         iab = impl->token_to_id.find(a + b);
    if (ia == impl->token_to_id.end() || ib == impl->token_to_id.end())
      throw fail("model.merges[" + std::to_string(r) + "] names a token not in model.vocab: \"" +
                 a + " " + b + "\"");
    if (iab == impl->token_to_id.end())
      throw fail("model.merges[" + std::to_string(r) + "]: merged token \"" + a + b +
                 "\" is not in model.vocab");
    impl->merges.insert(ia->second, ib->second, static_cast<uint32_t>(r), iab->second);
  }

  // --- added tokens ---
  impl->trie_token.push_back(-1);  // root
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const json& t = added_tokens[i];
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    AddedToken at{t["id"].get<int32_t>(), t["content"].get<std::string>(),
                  opt_bool(t, "special", false, where)};
    if (opt_bool(t, "lstrip", false, where) || opt_bool(t, "rstrip", false, where) ||
        opt_bool(t, "single_word", false, where))
      throw fail("added_tokens[" + std::to_string(i) + "]: lstrip/rstrip/single_word unsupported");
    if (at.content.empty()) throw fail("added_tokens[" + std::to_string(i) + "] is empty");
    impl->id_bytes[at.id] = at.content;
    impl->id_flags[at.id] |= 1 | 2 | (at.special ? 4 : 0);
    impl->token_to_id[at.content] = at.id;
    impl->add_trie(at.content, at.id);
    impl->added.push_back(std::move(at));
  }

  // --- normalizer ---
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& n = j["normalizer"];
    bool empty_seq = n.is_object() && n.contains("type") && n["type"] == "Sequence" &&
                     (!n.contains("normalizers") || n["normalizers"] == json::array());
    if (!empty_seq) throw fail("normalizer " + n.dump() + " is unsupported");
  }

  // --- pre-tokenizer ---
  std::vector<std::string> patterns;
  bool byte_level = false;
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    const json& pt = j["pre_tokenizer"];
    if (!pt.is_object()) throw fail("pre_tokenizer is not an object");
    std::vector<json> steps;
    if (opt_string(pt, "type", "", "pre_tokenizer") == "Sequence") {
      if (pt.contains("pretokenizers") && !pt["pretokenizers"].is_array())
        throw fail("pre_tokenizer.pretokenizers is not an array");
      for (const auto& s : pt.value("pretokenizers", json::array())) steps.push_back(s);
    } else {
      steps.push_back(pt);
    }
    for (size_t i = 0; i < steps.size(); ++i) {
      const json& s = steps[i];
      if (!s.is_object())
        throw fail("pre_tokenizer step " + std::to_string(i) + " is not an object");
      std::string type = opt_string(s, "type", "", "pre_tokenizer step " + std::to_string(i));
      std::string where = "pre_tokenizer step " + std::to_string(i) + " (" + type + ")";
      if (type == "Split") {
        if (opt_string(s, "behavior", "", where) != "Isolated" ||
            opt_bool(s, "invert", false, where))
          throw fail(where + ": only behavior Isolated without invert is supported");
        if (byte_level) throw fail(where + ": Split after ByteLevel is unsupported");
        const json pat =
            s.contains("pattern") && s["pattern"].is_object() ? s["pattern"] : json::object();
        if (pat.contains("Regex") && pat["Regex"].is_string()) {
          patterns.push_back(onig_to_pcre2(pat["Regex"].get<std::string>()));
        } else if (pat.contains("String") && pat["String"].is_string()) {
          std::string lit = pat["String"].get<std::string>();
          patterns.push_back("\\Q" + lit + "\\E");
        } else {
          throw fail(where + ": pattern must be {\"Regex\": ...} or {\"String\": ...}");
        }
      } else if (type == "ByteLevel") {
        if (opt_bool(s, "add_prefix_space", false, where) || opt_bool(s, "use_regex", true, where))
          throw fail(where + ": only add_prefix_space=false, use_regex=false is supported");
        byte_level = true;
      } else {
        throw fail(where + ": unsupported pre-tokenizer type");
      }
    }
  }
  if (!byte_level) throw fail("pre_tokenizer must end with ByteLevel (byte-level BPE)");
  try {
    impl->splitter = std::make_unique<RegexSplitter>(patterns);
  } catch (const Error& e) {
    throw fail(e.what());
  }

  // --- bos/eos from tokenizer_config.json ---
  auto name_of = [](const json& v) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
      return v["content"].get<std::string>();
    return {};
  };
  std::string bos_name = "<｜begin▁of▁sentence｜>", eos_name = "<｜end▁of▁sentence｜>";
  if (!config_json.empty()) {
    json c;
    try {
      c = json::parse(config_json);
    } catch (const json::exception& e) {
      throw Error("tokenizer_config.json: not valid JSON: " + printable(e.what()));
    }
    if (c.contains("bos_token") && !name_of(c["bos_token"]).empty())
      bos_name = name_of(c["bos_token"]);
    if (c.contains("eos_token") && !name_of(c["eos_token"]).empty())
      eos_name = name_of(c["eos_token"]);
  }
  auto find_id = [&](const std::string& s) {
    auto it = impl->token_to_id.find(s);
    return it == impl->token_to_id.end() ? -1 : it->second;
  };
  impl->bos = find_id(bos_name);
  impl->eos = find_id(eos_name);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
    throw Error("input text is not valid UTF-8: bad sequence at byte offset " +
                std::to_string(bad) + " (byte " + hex + ")");
  }
  const Impl& im = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t gap_start = 0, i = 0, n = text.size();
  while (i < n) {
    if (!im.trie_first[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    int32_t id = -1;
    size_t len = im.match_added(text, i, &id);
    if (len == 0) {
      ++i;
      continue;
    }
    im.encode_gap(text.substr(gap_start, i - gap_start), out);
    out.push_back(id);
    i += len;
    gap_start = i;
  }
  im.encode_gap(text.substr(gap_start), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::string bytes;
  for (size_t k = 0; k < ids.size(); ++k) {
    int32_t id = ids[k];
    if (id < 0 || static_cast<size_t>(id) >= im.id_bytes.size() || !(im.id_flags[id] & 1))
      throw Error("decode: unknown token id " + std::to_string(id) + " at position " +
                  std::to_string(k));
    if (skip_special && (im.id_flags[id] & 4)) continue;
    bytes += im.id_bytes[id];
  }
  std::string out;
  append_utf8_lossy(out, bytes);
  return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_bytes.size()) return {};
  return impl_->id_bytes[id];
}

int32_t Tokenizer::token_id(std::string_view token) const {
  auto it = impl_->token_to_id.find(token);
  return it == impl_->token_to_id.end() ? -1 : it->second;
}

size_t Tokenizer::vocab_size() const { return impl_->id_bytes.size(); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_flags.size() && (impl_->id_flags[id] & 4);
}

bool Tokenizer::is_added(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_flags.size() && (impl_->id_flags[id] & 2);
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }

std::string StreamingDetokenizer::push(int32_t id) {
  if (tok_.token_bytes(id).empty() && !tok_.is_added(id)) {
    // Delegate the error message (unknown id) to decode().
    int32_t one[1] = {id};
    (void)tok_.decode(one);
  }
  if (!(skip_special_ && tok_.is_special(id))) pending_ += tok_.token_bytes(id);
  size_t hold = incomplete_utf8_tail(pending_);
  std::string out;
  append_utf8_lossy(out, std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out;
  append_utf8_lossy(out, pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4::tok
