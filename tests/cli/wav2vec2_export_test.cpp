// The model contract end to end with a real architecture: tools/export_wav2vec2.py exports torchaudio's
// wav2vec2-base (random weights), the real align-batch-worker loads it and aligns, and its frames,
// labels and scores match what PyTorch itself gets from the same TorchScript file on the same audio.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli/cli_process.h"
#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kPython = "/usr/bin/python3";  // Debian's, with python3-torch and python3-torchaudio
const fs::path kSource = AB_SOURCE_DIR;

/// For doctest::skip: true, printing why to stderr, when Debian's python3-torchaudio is missing
/// (scripts/setup.sh installs it for the tests). Checked without importing torch, which takes seconds.
bool torchaudio_missing() {
  if (fs::is_regular_file("/usr/lib/python3/dist-packages/torchaudio/__init__.py")) return false;
  std::fprintf(stderr, "cli_test: skipping the wav2vec2 export test: %s has no torchaudio (apt-get install "
               "python3-torchaudio, or scripts/setup.sh test)\n", kPython.c_str());
  return true;
}

/// wav2vec2's feature extractor: seven convolutions, strides 5,2,2,2,2,2,2 (hop 320), kernels
/// 10,3,3,3,3,2,2 (receptive field 400). Its own count, not N / 320.
std::int64_t wav2vec2_frames(std::int64_t samples) { return (samples - 400) / 320 + 1; }

/// `samples` of a sum of three sines (not silence: random weights still give a varied output).
std::vector<float> test_signal(std::int64_t samples) {
  std::vector<float> x(static_cast<std::size_t>(samples));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double t = double(i) / 16000.0;
    x[i] = float(0.2 * std::sin(2 * M_PI * 220 * t) + 0.1 * std::sin(2 * M_PI * 1250 * t + 1) +
                 0.05 * std::sin(2 * M_PI * 3100 * t));
  }
  return x;
}

/// Runs the worker over `jobs` (one JSON line each) and returns its stdout lines that are results.
std::vector<json> run_worker(const ab::test::TempDir& t, const fs::path& model, const std::vector<json>& jobs,
                             const std::vector<std::string>& flags, json* ready) {
  std::string lines;
  for (const auto& j : jobs) lines += j.dump() + "\n";
  const fs::path jobs_file = t.write("jobs-" + std::to_string(jobs.front().at("id").get<int>()) + ".jsonl", lines);
  std::string cmd = std::string("exec ") + AB_WORKER_BIN + " --model " + model.string() + " --threads 1";
  for (const auto& f : flags) cmd += " " + f;
  cmd += " < " + jobs_file.string();
  const ab::cli::Result r = ab::cli::run({"/bin/sh", "-c", cmd}, t.path());
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  std::vector<json> results;
  std::istringstream out(r.out);
  std::string line;
  while (std::getline(out, line)) {
    json j = json::parse(line);
    if (j.contains("ready")) *ready = j;
    else if (j.contains("ok")) results.push_back(j);
  }
  REQUIRE(results.size() == jobs.size());
  return results;
}

}  // namespace

TEST_CASE("wav2vec2-base exported by tools/export_wav2vec2.py: the worker loads it; frames, labels and scores match "
          "PyTorch's" * doctest::skip(torchaudio_missing())) {
  ab::test::TempDir t{"ab-cli-wav2vec2"};
  const fs::path model = t.path() / "w2v2_base.pt";
  {
    const ab::cli::Result r = ab::cli::run({kPython, (kSource / "tools/export_wav2vec2.py").string(), "--bundle",
                                            "WAV2VEC2_ASR_BASE_960H", "--random-weights", "--out",
                                            (t.path() / "w2v2_base").string()},
                                           t.path());
    CAPTURE(r.out);
    CAPTURE(r.err);
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(fs::is_regular_file(model));
  const json sidecar = json::parse(ab::cli::slurp(t.path() / "w2v2_base.json"));

  // The sidecar's labels are the bundle's own, as torchaudio reports them (lower-cased).
  const ab::cli::Result labels = ab::cli::run(
      {kPython, "-c",
       "import json, torchaudio; "
       "print(json.dumps([l.lower() for l in torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H.get_labels()]))"},
      t.path());
  REQUIRE(labels.exit_code == 0);
  CHECK(sidecar.at("labels") == json::parse(labels.out));
  CHECK(sidecar.at("labels").size() == 29);
  CHECK(sidecar.at("labels")[0] == "-");
  CHECK(sidecar.at("blank") == 0);
  CHECK(sidecar.at("word_separator") == "|");
  CHECK(sidecar.at("labels")[1] == "|");
  CHECK(sidecar.at("sample_rate") == 16000);
  CHECK(sidecar.at("samples_per_frame") == 320);
  CHECK(sidecar.at("receptive_field_samples") == 400);
  CHECK(sidecar.at("outputs") == "log_probs");

  // Lengths that are not multiples of the hop: 1.23 s, and one just past a frame's receptive field.
  const std::vector<std::int64_t> lengths = {19683, 16000 + 400 + 319};
  std::vector<json> jobs;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const std::string stem = "a" + std::to_string(i);
    const std::string err = ab::test::write_audio((t.path() / (stem + ".wav")).string(), ab::test::audio_formats()[0],
                                                  16000, 1, test_signal(lengths[i]));
    REQUIRE(err.empty());
    t.write(stem + ".txt", "the cat");
    jobs.push_back({{"id", int(i)},
                    {"audio", (t.path() / (stem + ".wav")).string()},
                    {"transcript", (t.path() / (stem + ".txt")).string()},
                    {"out", (t.path() / ("out-" + stem)).string()},
                    {"task", "align"}});
  }

  // What PyTorch gets from the same file: the wave module's int16 / 32768 (what torchaudio.load
  // gives too), one forward over the whole file, the shared numpy CTC Viterbi of bench/.
  const std::string reference = R"PY(
import json, sys, wave
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from ctc_viterbi import encode, viterbi
info = json.load(open(sys.argv[2][:-3] + ".json"))
net = torch.jit.load(sys.argv[2]).eval()
torch.set_num_threads(1)
for path in sys.argv[3:]:
    with wave.open(path, "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    with torch.inference_mode():
        e, n = net(torch.from_numpy(x).unsqueeze(0), torch.tensor([x.size]))
    logp = e[0].numpy()
    tokens, _ = encode(info["labels"], info["word_separator"], "the cat")
    path_states = viterbi(logp, tokens, info["blank"])
    ext = np.full(2 * len(tokens) + 1, info["blank"])
    ext[1::2] = tokens
    score = float(sum(logp[t, ext[s]] for t, s in enumerate(path_states)))
    print(json.dumps({"samples": int(x.size), "frames": int(e.shape[1]), "labels": int(e.shape[2]),
                      "lengths": int(n[0]), "log_prob": score}))
)PY";
  std::vector<std::string> argv = {kPython, "-c", reference, (kSource / "bench").string(), model.string()};
  for (const auto& j : jobs) argv.push_back(j.at("audio").get<std::string>());
  const ab::cli::Result py = ab::cli::run(argv, t.path());
  CAPTURE(py.err);
  REQUIRE(py.exit_code == 0);
  std::vector<json> torch_says;
  {
    std::istringstream in(py.out);
    std::string line;
    while (std::getline(in, line)) torch_says.push_back(json::parse(line));
  }
  REQUIRE(torch_says.size() == lengths.size());

  // One window per file: the worker's emissions are PyTorch's, so its alignment scores the same.
  json ready;
  const std::vector<json> whole = run_worker(t, model, jobs, {}, &ready);
  CHECK(ready.at("labels") == 29);
  CHECK(ready.at("sample_rate") == 16000);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    CAPTURE(lengths[i]);
    CAPTURE(whole[i].dump());
    REQUIRE(whole[i].at("ok") == true);
    CHECK(torch_says[i].at("samples") == lengths[i]);
    CHECK(torch_says[i].at("frames") == wav2vec2_frames(lengths[i]));
    CHECK(torch_says[i].at("lengths") == wav2vec2_frames(lengths[i]));
    CHECK(torch_says[i].at("labels") == 29);
    CHECK(whole[i].at("frames") == wav2vec2_frames(lengths[i]));
    CHECK(whole[i].at("windows") == 1);
    CHECK(whole[i].at("audio_s").get<double>() == doctest::Approx(double(lengths[i]) / 16000.0));
    CHECK(whole[i].at("emissions_bytes") == wav2vec2_frames(lengths[i]) * 29 * 4);
    const double worker_lp = whole[i].at("log_prob").get<double>();
    const double torch_lp = torch_says[i].at("log_prob").get<double>();
    MESSAGE(lengths[i] << " samples: " << whole[i].at("frames") << " frames; CTC path log-probability worker "
                       << worker_lp << ", PyTorch " << torch_lp);
    CHECK(worker_lp == doctest::Approx(torch_lp).epsilon(1e-4));
    // Timings run on the sidecar's 20 ms frames and stay inside the audio.
    const json out = json::parse(ab::cli::slurp(jobs[i].at("out").get<std::string>() + ".json"));
    REQUIRE(out.at("words").size() == 2);
    CHECK(out.at("words")[1].at("end_s").get<double>() <= double(lengths[i]) / 16000.0 + 1e-9);
    for (const auto& w : out.at("words")) {
      const double start_frames = w.at("start_s").get<double>() / 0.02;
      CHECK(std::fabs(start_frames - std::round(start_frames)) < 1e-6);
    }
  }

  // Several windows (0.4 s + 0.25 s context) stitched by frames: still the model's own frame count.
  // (Not the same scores: wav2vec2-base's first GroupNorm takes its statistics over the window.)
  const std::vector<json> windowed = run_worker(t, model, {jobs[0]}, {"--window-s", "0.4", "--context-s", "0.25"}, &ready);
  REQUIRE(windowed[0].at("ok") == true);
  CHECK(windowed[0].at("windows").get<int>() >= 3);
  CHECK(windowed[0].at("frames") == wav2vec2_frames(lengths[0]));
}
