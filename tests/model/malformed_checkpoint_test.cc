// Malformed checkpoints, generated from the golden ones by the test itself: each must be
// rejected with an error naming what is wrong (file, tensor, field, offset) — never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "test_support.h"
#include "util/error.h"

namespace dsv4::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// A writable copy of a golden checkpoint directory (model files + config only).
fs::path copy_golden(const TempDir& tmp, const std::string& config) {
  const fs::path src = shared_dir() / "golden" / config;
  const fs::path dst = tmp.path() / config;
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) {
    const std::string n = e.path().filename().string();
    if (n == "config.json" || n.find("safetensors") != std::string::npos)
      fs::copy_file(e.path(), dst / n);
  }
  return dst;
}

struct Parts {
  json header;
  std::string data;
};
Parts split(const fs::path& file) {
  const std::string s = slurp(file);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(s[i]);
  return {json::parse(s.substr(8, n)), s.substr(8 + n)};
}
void join(const fs::path& file, const Parts& p) {
  std::string h = p.header.dump();
  while (h.size() % 8) h += ' ';
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  spit(file, len + h + p.data);
}

// Runs Model::load and returns the error text ("" if it loaded).
std::string load_error(const fs::path& dir) {
  try {
    Model::load(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Case {
  const char* name;
  const char* config;
  std::function<void(const fs::path& dir)> corrupt;
  std::vector<std::string> expect;  // substrings of the error
};

void edit_header(const fs::path& f, const std::function<void(json&)>& fn) {
  Parts p = split(f);
  fn(p.header);
  join(f, p);
}
void edit_config(const fs::path& dir, const std::function<void(json&)>& fn) {
  json c = json::parse(slurp(dir / "config.json"));
  fn(c);
  spit(dir / "config.json", c.dump(2));
}

const std::vector<Case>& cases() {
  static const std::vector<Case> k = {
      {"TruncatedFile",
       "small",
       [](const fs::path& d) {
         const auto s = slurp(d / "model.safetensors");
         spit(d / "model.safetensors", s.substr(0, s.size() / 2));
       },
       {"model.safetensors", "outside the file"}},
      // The parser quotes the bytes it stopped at; the message shows them as \xNN, not raw.
      {"HeaderBytesNotText",
       "small",
       [](const fs::path& d) {
         auto s = slurp(d / "model.safetensors");
         s[8 + 40] = static_cast<char>(0xa9);
         spit(d / "model.safetensors", s);
       },
       {"model.safetensors", "header is not valid JSON", "\\xa9"}},
      {"ShorterThanHeaderLength",
       "small",
       [](const fs::path& d) { spit(d / "model.safetensors", "abc"); },
       {"model.safetensors", "truncated"}},
      {"HeaderLengthPastEnd",
       "small",
       [](const fs::path& d) {
         auto s = slurp(d / "model.safetensors");
         for (int i = 0; i < 8; ++i) s[i] = i < 6 ? '\x7f' : 0;
         spit(d / "model.safetensors", s);
       },
       {"model.safetensors", "header length", "past the end"}},
      {"BadHeaderJson",
       "small",
       [](const fs::path& d) {
         auto s = slurp(d / "model.safetensors");
         s[8] = '#';
         spit(d / "model.safetensors", s);
       },
       {"model.safetensors", "not valid JSON"}},
      {"HeaderNotObject",
       "small",
       [](const fs::path& d) {
         Parts p = split(d / "model.safetensors");
         p.header = json::array({1, 2});
         join(d / "model.safetensors", p);
       },
       {"not an object"}},
      {"UnknownDtype",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) { h["norm.weight"]["dtype"] = "F16"; });
       },
       {"norm.weight", "unsupported dtype", "F16"}},
      {"OffsetsOutOfBounds",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) {
           h["norm.weight"]["data_offsets"] = json::array({1ull << 40, (1ull << 40) + 1024});
         });
       },
       {"norm.weight", "outside the file"}},
      {"OffsetsOverlap",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) {
           h["norm.weight"]["data_offsets"] = h["head.weight"]["data_offsets"];
           h["norm.weight"]["data_offsets"][1] =
               h["norm.weight"]["data_offsets"][0].get<uint64_t>() + 1024;
         });
       },
       {"overlap", "norm.weight"}},
      {"ByteCountMismatch",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors",
                     [](json& h) { h["norm.weight"]["shape"] = json::array({511}); });
       },
       {"norm.weight", "needs"}},
      {"ShapeDisagreesWithConfig",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) {
           h["norm.weight"]["shape"] = json::array({2, 256});
         });
       },
       {"norm.weight", "[2, 256]", "expects BF16 [512]"}},
      {"DtypeDisagreesWithConfig",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) {
           h["norm.weight"]["dtype"] = "I8";
           h["norm.weight"]["shape"] = json::array({1024});
         });
       },
       {"norm.weight", "I8", "expects BF16"}},
      {"MissingTensor",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors", [](json& h) {
           h["renamed.weight"] = h["layers.1.attn.wkv.weight"];
           h.erase("layers.1.attn.wkv.weight");
         });
       },
       {"missing tensor 'layers.1.attn.wkv.weight'", "unexpected tensor 'renamed.weight'"}},
      {"NegativeDimension",
       "small",
       [](const fs::path& d) {
         edit_header(d / "model.safetensors",
                     [](json& h) { h["norm.weight"]["shape"] = json::array({-512}); });
       },
       {"norm.weight", "bad shape"}},
      {"ShardMissing",
       "tiny",
       [](const fs::path& d) { fs::remove(d / "model-00002-of-00003.safetensors"); },
       {"model.safetensors.index.json", "model-00002-of-00003.safetensors", "missing"}},
      {"IndexNotJson",
       "tiny",
       [](const fs::path& d) { spit(d / "model.safetensors.index.json", "{oops"); },
       {"model.safetensors.index.json", "not valid JSON"}},
      {"IndexPointsToWrongShard",
       "tiny",
       [](const fs::path& d) {
         json j = json::parse(slurp(d / "model.safetensors.index.json"));
         j["weight_map"]["norm.weight"] = "model-00003-of-00003.safetensors";
         spit(d / "model.safetensors.index.json", j.dump());
       },
       {"norm.weight", "model-00003-of-00003.safetensors"}},
      {"ConfigMissingRequiredKey",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c.erase("hidden_size"); }); },
       {"config.json", "missing required key 'hidden_size'"}},
      {"ConfigMissingNestedKey",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["rope_scaling"].erase("factor"); });
       },
       {"config.json", "rope_scaling.factor"}},
      {"ConfigBadCompressRatio",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["compress_ratios"][1] = 3; }); },
       {"config.json", "compress_ratios entry 3"}},
      {"ConfigWrongType",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["num_attention_heads"] = "eight"; });
       },
       {"config.json", "num_attention_heads", "integer"}},
      // Values the forward pass would turn into NaN or silently different logits.
      {"ConfigNegativeEpsilon",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["rms_norm_eps"] = -1e-6; }); },
       {"config.json", "rms_norm_eps", ">= 0"}},
      {"ConfigRopeThetaNotAboveOne",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["compress_rope_theta"] = 0; }); },
       {"config.json", "compress_rope_theta", "> 1"}},
      {"ConfigInfiniteInFp32",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["routed_scaling_factor"] = 1e39; });
       },
       {"config.json", "routed_scaling_factor", "finite"}},
      {"ConfigNonPositiveContext",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["max_position_embeddings"] = 0; }); },
       {"config.json", "max_position_embeddings", "positive"}},
      {"ConfigNegativeMtpLayers",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["num_nextn_predict_layers"] = -1; });
       },
       {"config.json", "num_nextn_predict_layers", "0 or more"}},
      {"ConfigEosOutsideVocab",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["eos_token_id"] = 1 << 20; }); },
       {"config.json", "eos_token_id", "vocab_size"}},
      {"ConfigOtherRopeScaling",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["rope_scaling"]["type"] = "linear"; });
       },
       {"config.json", "rope_scaling.type", "\"linear\"", "yarn"}},
      {"ConfigOtherRopeType",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) { c["rope_scaling"]["rope_type"] = "linear"; });
       },
       {"config.json", "rope_scaling.rope_type"}},
      {"ConfigOtherActivation",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["hidden_act"] = "gelu"; }); },
       {"config.json", "hidden_act", "silu"}},
      {"ConfigAttentionBias",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["attention_bias"] = true; }); },
       {"config.json", "attention_bias"}},
      {"ConfigExpertDtypeNotString",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["expert_dtype"] = 4; }); },
       {"config.json", "expert_dtype 4"}},
      // A count far off fails at once, listing the first problems (not 10^8 missing tensors).
      {"ConfigMillionsOfExperts",
       "small",
       [](const fs::path& d) { edit_config(d, [](json& c) { c["n_routed_experts"] = 1 << 30; }); },
       {"checkpoint does not match config.json", "checking stopped", "layers.0.ffn.gate.weight",
        "…and "}},
      {"ConfigNotJson",
       "small",
       [](const fs::path& d) { spit(d / "config.json", "not json"); },
       {"config.json", "not valid JSON"}},
      {"ConfigAbsent",
       "small",
       [](const fs::path& d) { fs::remove(d / "config.json"); },
       {"no config.json"}},
      {"ConfigLayersDisagreeWithTensors",
       "small",
       [](const fs::path& d) {
         edit_config(d, [](json& c) {
           c["num_hidden_layers"] = 5;
           c["compress_ratios"] = json::array({0, 0, 4, 128, 4});
         });
       },
       {"missing tensor 'layers.4."}},
      {"HashTableOutOfRange",
       "small",
       [](const fs::path& d) {
         Parts p = split(d / "model.safetensors");
         const uint64_t off = p.header["layers.0.ffn.gate.tid2eid"]["data_offsets"][0];
         const int64_t bad = 999;
         std::memcpy(&p.data[off + 8 * 5], &bad, 8);
         join(d / "model.safetensors", p);
       },
       {"layers.0.ffn.gate.tid2eid", "element 5 = 999"}},
      {"NoSafetensorsAtAll",
       "small",
       [](const fs::path& d) { fs::remove(d / "model.safetensors"); },
       {"no model.safetensors"}},
  };
  return k;
}

class Malformed : public ::testing::TestWithParam<size_t> {};

TEST_P(Malformed, RejectedWithNamedError) {
  const Case& c = cases()[GetParam()];
  TempDir tmp(std::string("malformed-") + c.name);
  const fs::path dir = copy_golden(tmp, c.config);
  c.corrupt(dir);
  const std::string err = load_error(dir);
  ASSERT_FALSE(err.empty()) << c.name << ": a malformed checkpoint loaded";
  for (const auto& s : c.expect)
    EXPECT_NE(err.find(s), std::string::npos) << c.name << ": '" << s << "' not in: " << err;
  EXPECT_EQ(err.find('\xa9'), std::string::npos)
      << c.name << ": a raw byte of the file in: " << err;
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, Malformed, ::testing::Range<size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& i) {
                           return std::string(cases()[i.param].name);
                         });

TEST(MalformedCli, LogitsCommandExitsNonZeroWithMessage) {
  TempDir tmp("malformed-cli");
  const fs::path dir = copy_golden(tmp, "small");
  edit_header(dir / "model.safetensors", [](json& h) { h["norm.weight"]["dtype"] = "F16"; });
  spit(tmp.path() / "ids.json", "[0, 1, 2]");
  std::string out;
  const int rc = run_command(dsv4_binary() + " logits -m " + dir.string() + " --ids-file " +
                                 (tmp.path() / "ids.json").string() + " --out " +
                                 (tmp.path() / "o.bin").string(),
                             &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unsupported dtype"), std::string::npos) << out;
}

// safetensors does not align tensor data: a writer that does not pad the header to 8 bytes puts
// every tensor at an odd address. Such a file is valid and gives the same logits, bit for bit
// (the embedding row was read through a misaligned uint16_t pointer, which UBSan stops on).
TEST(ValidCheckpoint, UnalignedTensorDataGivesTheSameLogits) {
  TempDir tmp("unaligned");
  const fs::path dir = copy_golden(tmp, "small");
  spit(tmp.path() / "ids.json", "[0, 5, 17, 3, 9, 1, 200, 42]");
  auto logits = [&](const std::string& name) {
    std::string out;
    const fs::path o = tmp.path() / name;
    const int rc =
        run_command(dsv4_binary() + " logits -m " + dir.string() + " --ids-file " +
                        (tmp.path() / "ids.json").string() + " --out " + o.string() + " 2>&1",
                    &out);
    EXPECT_EQ(rc, 0) << out;
    return slurp(o);
  };
  const std::string aligned = logits("aligned.bin");
  Parts p = split(dir / "model.safetensors");
  std::string h = p.header.dump();
  while (h.size() % 8 != 1) h += ' ';  // data from byte 8 + h.size(): odd
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  spit(dir / "model.safetensors", len + h + p.data);
  const std::string unaligned = logits("unaligned.bin");
  ASSERT_FALSE(aligned.empty());
  EXPECT_TRUE(aligned == unaligned) << "logits differ when the tensor data is unaligned";
}

TEST(ValidCheckpoint, UnknownConfigKeysAreNotedNotFatal) {
  TempDir tmp("future-key");
  const fs::path dir = copy_golden(tmp, "small");
  edit_config(dir, [](json& c) { c["some_future_key"] = 42; });
  auto m = Model::load(dir.string());
  bool noted = false;
  for (const auto& n : m->config().notes) noted |= n.find("some_future_key") != std::string::npos;
  EXPECT_TRUE(noted);
}

}  // namespace
}  // namespace dsv4::test
