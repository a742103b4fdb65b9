// Tests for the sidecar JSON parser: every field, its errors, and the file reader.
#include "protocol/model_info.h"

#include <doctest/doctest.h>

#include "tests/testutil/temp_dir.h"

namespace ab {

namespace {
const char* kGood = R"({"labels": ["<blk>", "|", "a", "b", "<unk>"], "blank": 0, "star": 4, "word_separator": "|",
                        "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})";
}

TEST_CASE("model_info: a complete sidecar parses into every field") {
  ModelInfoParse r = parse_model_info(kGood);
  REQUIRE_MESSAGE(r.info, r.error);
  CHECK(r.info->labels.size() == 5);
  CHECK(r.info->labels[2] == "a");
  CHECK(r.info->blank == 0);
  CHECK(r.info->star == 4);
  CHECK(r.info->word_separator == "|");
  CHECK(r.info->sample_rate_hz == 16000);
  CHECK(r.info->samples_per_frame == 320);
  CHECK(r.info->outputs == ModelInfo::Outputs::kLogits);
  CHECK(r.info->frame_s() == doctest::Approx(0.02));
  CHECK(r.info->index_of("b") == 3);
  CHECK(r.info->index_of("z") == -1);
}

TEST_CASE("model_info: star and word_separator may be null; log_probs is accepted") {
  ModelInfoParse r = parse_model_info(R"({"labels": ["-", "a"], "blank": 0, "star": null, "word_separator": null,
      "sample_rate": 8000, "samples_per_frame": 160, "outputs": "log_probs"})");
  REQUIRE_MESSAGE(r.info, r.error);
  CHECK(!r.info->star);
  CHECK(r.info->word_separator.empty());
  CHECK(r.info->outputs == ModelInfo::Outputs::kLogProbs);
  CHECK(r.info->frame_s() == doctest::Approx(0.02));
}

TEST_CASE("model_info: each malformed field is rejected with a message naming it") {
  struct Case {
    const char* json;
    const char* expect;
  };
  const Case cases[] = {
      {"not json", "not valid JSON"},
      {"[1, 2]", "JSON object"},
      {R"({"blank": 0, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"labels\""},
      {R"({"labels": [], "blank": 0, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"labels\""},
      {R"({"labels": ["a", 3], "blank": 0, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"labels\""},
      {R"({"labels": ["-", "a"], "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"blank\" is required"},
      {R"({"labels": ["-", "a"], "blank": 2, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"blank\" must be"},
      {R"({"labels": ["-", "a"], "blank": 0, "star": 0, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "must differ"},
      {R"({"labels": ["-", "a"], "blank": 0, "star": -1, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "\"star\" must be"},
      {R"({"labels": ["-", "a"], "blank": 0, "word_separator": "|", "sample_rate": 16000, "samples_per_frame": 320, "outputs": "logits"})", "not one of the labels"},
      {R"({"labels": ["-", "a"], "blank": 0, "samples_per_frame": 320, "outputs": "logits"})", "\"sample_rate\" is required"},
      {R"({"labels": ["-", "a"], "blank": 0, "sample_rate": 0, "samples_per_frame": 320, "outputs": "logits"})", "\"sample_rate\" must be"},
      {R"({"labels": ["-", "a"], "blank": 0, "sample_rate": 16000, "samples_per_frame": "320", "outputs": "logits"})", "\"samples_per_frame\" must be"},
      {R"({"labels": ["-", "a"], "blank": 0, "sample_rate": 16000, "samples_per_frame": 320})", "\"outputs\""},
      {R"({"labels": ["-", "a"], "blank": 0, "sample_rate": 16000, "samples_per_frame": 320, "outputs": "probs"})", "not \"probs\""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    ModelInfoParse r = parse_model_info(c.json);
    CHECK(!r.info);
    CHECK(r.error.find(c.expect) != std::string::npos);
  }
}

TEST_CASE("model_info: the sidecar sits beside the model with the same stem") {
  CHECK(sidecar_path("/m/wav2vec2.pt") == "/m/wav2vec2.json");
  CHECK(sidecar_path("/m/model.v2.pt") == "/m/model.v2.json");
  CHECK(sidecar_path("rel/model") == "rel/model.json");
}

TEST_CASE("model_info: read_model_info reads the file and names it in errors") {
  test::TempDir dir;
  dir.write("good.json", kGood);
  ModelInfoParse good = read_model_info(dir.path() / "good.pt");
  REQUIRE_MESSAGE(good.info, good.error);
  CHECK(good.info->star == 4);

  ModelInfoParse missing = read_model_info(dir.path() / "missing.pt");
  CHECK(!missing.info);
  CHECK(missing.error.find((dir.path() / "missing.json").string()) != std::string::npos);
  CHECK(missing.error.find("beside missing.pt") != std::string::npos);

  dir.write("bad.json", R"({"labels": ["a"]})");
  ModelInfoParse bad = read_model_info(dir.path() / "bad.pt");
  CHECK(!bad.info);
  CHECK(bad.error.find((dir.path() / "bad.json").string() + ": \"blank\" is required") != std::string::npos);
}

}  // namespace ab
