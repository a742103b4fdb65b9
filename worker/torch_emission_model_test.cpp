// Tests for TorchEmissionModel with TorchScript modules defined here: contract checks, logits,
// and a real LibTorch allocation failure (caught as EngineOutOfMemory, retried by the real worker).
#include "worker/torch_emission_model.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <torch/script.h>

#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"

namespace ab {

namespace {

ModelInfo info_for(int labels, ModelInfo::Outputs outputs) {
  ModelInfo info;
  for (int i = 0; i < labels; ++i) info.labels.push_back(i == 0 ? "<blk>" : std::string(1, char('a' + i - 1)));
  info.outputs = outputs;
  return info;
}

/// Saves a module whose forward is `body` (TorchScript, indented 4 spaces) and returns its path.
std::string save_module(const test::TempDir& dir, const std::string& name, const std::string& body) {
  torch::jit::Module m(name);
  m.define("def forward(self, waveforms: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:\n" + body);
  const auto path = (dir.path() / (name + ".pt")).string();
  m.save(path);
  return path;
}

/// Emissions whose frame t has logit t mod 3 on label (t mod 3); frames = samples / 320.
const char* kRampBody =
    "    t = torch.div(lengths[0], 320, rounding_mode='floor')\n"
    "    idx = torch.remainder(torch.arange(t), 3)\n"
    "    logits = torch.eq(idx.unsqueeze(1), torch.arange(3).unsqueeze(0)).float() * 5.0\n"
    "    return logits.unsqueeze(0), torch.div(lengths, 320, rounding_mode='floor')\n";

/// Asks LibTorch for 2^42 floats (16 TiB) when the window exceeds 20000 samples: a genuine
/// allocator failure; otherwise uniform emissions over 3 labels.
const char* kGreedyBody =
    "    if int(lengths[0]) > 20000:\n"
    "        huge = torch.empty([4398046511104])\n"
    "        return huge.view(1, -1, 1), lengths\n"
    "    t = torch.div(lengths[0], 320, rounding_mode='floor')\n"
    "    return torch.log_softmax(torch.zeros([1, int(t), 3]), -1), torch.div(lengths, 320, rounding_mode='floor')\n";

}  // namespace

TEST_CASE("torch_emission_model: logits get a log_softmax; log_probs pass through; shapes are checked") {
  test::TempDir dir;
  const auto ramp = save_module(dir, "ramp", kRampBody);
  std::vector<float> samples(3200, 0.0f);

  TorchEmissionModel logits(ramp, info_for(3, ModelInfo::Outputs::kLogits));
  EmissionChunk c = logits.compute(samples.data(), samples.size());
  REQUIRE(c.frames == 10);
  REQUIRE(c.labels == 3);
  for (int t = 0; t < 10; ++t) {
    double sum = 0;
    for (int l = 0; l < 3; ++l) sum += std::exp(c.log_probs[t * 3 + l]);
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
    // log_softmax of (5, 0, 0): log(e^5 / (e^5 + 2)).
    CHECK(c.log_probs[t * 3 + t % 3] == doctest::Approx(5.0 - std::log(std::exp(5.0) + 2.0)).epsilon(1e-5));
  }
  TorchEmissionModel raw(ramp, info_for(3, ModelInfo::Outputs::kLogProbs));
  EmissionChunk r = raw.compute(samples.data(), samples.size());
  CHECK(r.log_probs[4] == doctest::Approx(5.0));  // frame 1, label 1: untouched

  TorchEmissionModel wrong(ramp, info_for(5, ModelInfo::Outputs::kLogProbs));
  CHECK_THROWS_WITH_AS(wrong.compute(samples.data(), samples.size()),
                       doctest::Contains("expected [1, T, 5] (one column per sidecar label)"), std::runtime_error);
}

TEST_CASE("torch_emission_model: a LibTorch allocation failure is EngineOutOfMemory; the model stays usable") {
  test::TempDir dir;
  const auto greedy = save_module(dir, "greedy", kGreedyBody);
  TorchEmissionModel model(greedy, info_for(3, ModelInfo::Outputs::kLogProbs));
  std::vector<float> samples(32000, 0.1f);
  CHECK_THROWS_WITH_AS(model.compute(samples.data(), samples.size()), doctest::Contains("can't allocate memory"),
                       EngineOutOfMemory);
  const EmissionChunk ok = model.compute(samples.data(), 16000);
  CHECK(ok.frames == 50);
}

TEST_CASE("torch_emission_model: the real worker retries a LibTorch OOM with half-size windows") {
  test::TempDir dir;
  const auto greedy = save_module(dir, "greedy", kGreedyBody);
  dir.write("greedy.json", R"({"labels": ["<blk>", "a", "b"], "blank": 0, "star": null, "word_separator": null,
                               "sample_rate": 16000, "samples_per_frame": 320, "outputs": "log_probs"})");
  const auto audio = (dir.path() / "a.wav").string();
  REQUIRE(test::write_tones(audio, test::audio_formats().front(), 16000, 1, {{700, 3.0, 0.5}}).empty());

  // 1 s windows + 2 x 0.2 s context = 22400 samples: out of memory; 0.5 s windows (14400) fit.
  // A second worker with 2 s windows fails at 2 s and at 1 s: a clear error, and it lives on.
  for (const char* window : {"1", "2"}) {
    CAPTURE(window);
    const std::string cmd = std::string("printf '%s\\n%s\\n' '") +
                            nlohmann::json{{"id", 1}, {"audio", audio}, {"out", (dir.path() / "o").string()},
                                           {"task", "transcribe"}}.dump() +
                            "' '" + nlohmann::json{{"id", 2}, {"audio", "/nonexistent.wav"}, {"out", "/tmp/x"}}.dump() +
                            "' | " + AB_WORKER_BIN + " --model " + greedy + " --window-s " + window +
                            " --context-s 0.2 2>" + (dir.path() / "log").string();
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::vector<nlohmann::json> results;
    char line[65536];
    while (std::fgets(line, sizeof line, p)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("ok")) results.push_back(j);
    }
    const int st = pclose(p);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    REQUIRE(results.size() == 2);
    if (std::string(window) == "1") {
      CHECK_MESSAGE(results[0]["ok"] == true, results[0].dump());
      CHECK(results[0]["window_s"].get<double>() == doctest::Approx(0.5));
    } else {
      CHECK(results[0]["ok"] == false);
      const std::string err = results[0]["error"];
      MESSAGE(err);
      CHECK(err.find(audio + ": out of memory in the engine even with 1 s windows") == 0);
      CHECK(err.find("can't allocate memory") != std::string::npos);
    }
    CHECK(results[1]["id"] == 2);  // the worker lived on to the next job
    CHECK(results[1]["ok"] == false);
  }
}

}  // namespace ab
