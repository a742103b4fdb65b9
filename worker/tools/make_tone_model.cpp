// make-tone-model: builds the tone test model (TorchScript, made in C++: no downloads) and its sidecar.
//
// Label k >= 1 is a sine at tone::frequency_hz(k); blank is silence. forward() computes, per 20 ms
// frame, the amplitude at each label's frequency (conv1d with sin/cos kernels), scales it to logits
// with blank at a fixed threshold, and returns log_softmax emissions (or raw logits with --logits).
// --ballast-mib N adds a parameter of N MiB (seeded random floats in [0, 1)) whose mean nudges the
// blank threshold, so the model is big enough to measure sharing its weights and its outputs
// depend on every byte of them.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/script.h>

#include "worker/tools/tone_spec.h"

int main(int argc, char** argv) {
  std::string out;
  bool logits = false;
  long ballast_mib = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--logits") {
      logits = true;
    } else if (a == "--ballast-mib" && i + 1 < argc) {
      ballast_mib = std::strtol(argv[++i], nullptr, 10);
    } else if (out.empty() && !a.empty() && a[0] != '-') {
      out = a;
    } else {
      out.clear();
      break;
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "usage: make-tone-model [--logits] [--ballast-mib N] OUT.pt   (also writes OUT.json)\n");
    return 2;
  }
  namespace tone = ab::tone;
  const int n_tones = static_cast<int>(tone::labels().size()) - 1;
  const int frame = tone::kSamplesPerFrame;
  // Kernels [2K, 1, frame]: sines then cosines; sum(A sin * sin) over a frame is A * frame / 2.
  torch::Tensor kernels = torch::zeros({2 * n_tones, 1, frame}, torch::kFloat32);
  auto k = kernels.accessor<float, 3>();
  for (int t = 0; t < n_tones; ++t) {
    const double w = 2.0 * M_PI * tone::frequency_hz(t + 1) / tone::kSampleRateHz;
    for (int s = 0; s < frame; ++s) {
      k[t][0][s] = static_cast<float>(std::sin(w * s) * 2.0 / frame);
      k[n_tones + t][0][s] = static_cast<float>(std::cos(w * s) * 2.0 / frame);
    }
  }
  torch::jit::Module m("ToneModel");
  m.register_buffer("kernels", kernels);
  if (ballast_mib > 0) {
    torch::manual_seed(14);
    m.register_parameter("ballast", torch::rand({ballast_mib, 256, 1024}, torch::kFloat32), /*is_buffer=*/false);
  }
  const std::string src = R"(
def forward(self, waveforms: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
    x = waveforms.unsqueeze(1)
    y = torch.conv1d(x, self.kernels, None, [)" + std::to_string(frame) + R"(])
    y = y * y
    a = torch.sqrt(y[:, 0:)" + std::to_string(n_tones) + "] + y[:, " + std::to_string(n_tones) + R"(:])
    blank = torch.full_like(a[:, 0:1, :], )" + std::to_string(tone::kBlankAmplitude) + R"())" +
                          (ballast_mib > 0 ? " + 0.01 * self.ballast.mean()" : "") + R"(
    scores = torch.cat([blank, a], 1) * )" + std::to_string(tone::kGain) + R"(
    emissions = scores.transpose(1, 2))" + (logits ? "" : R"(
    emissions = torch.log_softmax(emissions, -1))") + R"(
    return emissions, torch.div(lengths, )" + std::to_string(frame) + R"(, rounding_mode='floor')
)";
  m.define(src);
  m.save(out);

  std::string sidecar = out;
  const auto dot = sidecar.rfind('.');
  const auto slash = sidecar.rfind('/');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) sidecar.resize(dot);
  sidecar += ".json";
  nlohmann::json j = {{"labels", tone::labels()},
                      {"blank", 0},
                      {"star", nullptr},
                      {"word_separator", "|"},
                      {"sample_rate", tone::kSampleRateHz},
                      {"samples_per_frame", frame},
                      {"outputs", logits ? "logits" : "log_probs"}};
  std::ofstream f(sidecar);
  f << j.dump(2) << "\n";
  if (!f) {
    std::fprintf(stderr, "make-tone-model: cannot write %s\n", sidecar.c_str());
    return 1;
  }
  std::printf("%s\n%s\n", out.c_str(), sidecar.c_str());
  return 0;
}
