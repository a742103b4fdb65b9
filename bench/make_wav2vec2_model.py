"""Writes a wav2vec2-sized TorchScript CTC model (torchaudio's own architecture, random weights:
nothing can be downloaded) and its sidecar, for the benchmarks that need a real model's size.

    /usr/bin/python3 bench/make_wav2vec2_model.py large OUT.pt   # 315M parameters, ~1.2 GiB
    /usr/bin/python3 bench/make_wav2vec2_model.py base OUT.pt    # 95M parameters

Export as docs/worker-protocol.md says (log_softmax inside forward, labels of the 960h bundles).
The weights are seeded, so every run writes the same model.
"""
import json
import sys

import torch
import torchaudio

# The label list of torchaudio's WAV2VEC2_ASR_*_960H bundles, lower-cased ('-' is blank).
LABELS = ['-', '|', 'e', 't', 'a', 'o', 'n', 'i', 'h', 's', 'r', 'd', 'l', 'u', 'm', 'w', 'c', 'f', 'g', 'y',
          'p', 'b', 'v', 'k', "'", 'x', 'j', 'q', 'z']


class Export(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        emissions, out_lengths = self.m(waveforms, lengths)
        return torch.log_softmax(emissions, -1), out_lengths


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("base", "large"):
        sys.exit("usage: make_wav2vec2_model.py base|large OUT.pt")
    size, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(14)
    build = torchaudio.models.wav2vec2_large if size == "large" else torchaudio.models.wav2vec2_base
    model = build(aux_num_out=len(LABELS)).eval()
    torch.jit.script(Export(model)).save(out)
    stem = out[:-3] if out.endswith(".pt") else out
    with open(stem + ".json", "w") as f:
        json.dump({"labels": LABELS, "blank": 0, "star": None, "word_separator": "|", "sample_rate": 16000,
                   "samples_per_frame": 320, "outputs": "log_probs"}, f)
    params = sum(p.numel() for p in model.parameters())
    print(f"{out}: wav2vec2-{size}, {params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MiB float32)")


if __name__ == "__main__":
    main()
