"""Exports a torchaudio wav2vec2-family CTC model as align-batch-worker's model: MODEL.pt + MODEL.json.

    /usr/bin/python3 tools/export_wav2vec2.py --out models/w2v2_base                  # downloads the weights
    /usr/bin/python3 tools/export_wav2vec2.py --out models/w2v2_base --weights FILE.pth  # weights copied in
    /usr/bin/python3 tools/export_wav2vec2.py --print-url                             # where FILE.pth comes from
    /usr/bin/python3 tools/export_wav2vec2.py --out /tmp/w2v2 --random-weights        # tests and benchmarks

--bundle names one of torchaudio.pipelines' ASR bundles (default WAV2VEC2_ASR_BASE_960H; list them
with --list). Needs PyTorch 1.13 and torchaudio 0.13 (Debian 12's python3-torch and
python3-torchaudio: use /usr/bin/python3), because align-batch-worker loads the result with
LibTorch 1.13, which cannot read TorchScript saved by a newer PyTorch.

What it writes (the contract is docs/worker-protocol.md, "Model file and sidecar"):
- MODEL.pt: TorchScript forward(waveforms [1, N] float32, lengths [1] int64) -> (log-probabilities
  [1, T, C], lengths [1]). The log_softmax is inside, and so is the input normalisation the model
  was trained with: none for the group-norm (base) models, which take the raw waveform in [-1, 1];
  zero mean and unit variance over the waveform handed in (what fairseq's `normalize: true` and
  torchaudio >= 2.0's `_normalize_waveform` do) for the layer-norm (large, XLS-R) ones.
- MODEL.json: the bundle's own label list (bundle.get_labels(), lower-cased; index 0 is the CTC
  blank, "|" the word separator), the bundle's sample rate, and samples_per_frame = the product of
  the feature extractor's convolution strides (320 for every wav2vec2 bundle). The extractor's
  receptive field (400 samples for wav2vec2) is recorded as receptive_field_samples: N samples give
  floor((N - receptive) / hop) + 1 frames, which the script checks on a short input before saving.

--random-weights builds the bundle's architecture with random parameters (seeded) instead of
loading its weights: nothing is downloaded, and the files have the real model's size, shapes, labels
and speed, but its emissions mean nothing. The tests and bench/ use it.
"""
import argparse
import json
import math
import os
import sys

import torch
import torchaudio
from torchaudio.models import wav2vec2_model

WEIGHTS_URL = "https://download.pytorch.org/torchaudio/models/{}"


class Export(torch.nn.Module):
    """The worker's contract around a torchaudio Wav2Vec2Model."""

    def __init__(self, model: torch.nn.Module, normalize: bool):
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        if self.normalize:
            # Per call, over the samples handed in: align-batch-worker calls once per window.
            waveforms = torch.nn.functional.layer_norm(waveforms, waveforms.shape)
        emissions, out_lengths = self.model(waveforms, lengths)
        return torch.log_softmax(emissions, -1), out_lengths


def asr_bundles():
    """Names of torchaudio.pipelines' bundles that have a CTC label list."""
    return sorted(n for n in dir(torchaudio.pipelines)
                  if isinstance(getattr(torchaudio.pipelines, n), torchaudio.pipelines.Wav2Vec2ASRBundle))


def frame_geometry(params):
    """(hop, receptive field) in samples of the convolutional feature extractor."""
    hop, receptive = 1, 1
    for _channels, kernel, stride in params["extractor_conv_layer_config"]:
        receptive += (kernel - 1) * hop
        hop *= stride
    return hop, receptive


def needs_normalisation(bundle, params):
    # torchaudio >= 2.0 says so itself; 0.13 does not, and there the large (layer-norm extractor)
    # models are exactly those fairseq trained with normalize: true.
    if hasattr(bundle, "_normalize_waveform"):
        return bool(bundle._normalize_waveform)
    return params["extractor_mode"] == "layer_norm"


def load_weights(bundle, path):
    """A state dict from a file downloaded from WEIGHTS_URL, fixed up as bundle.get_model() does."""
    state = torch.load(path, map_location="cpu")
    # torchaudio's ASR bundles drop fairseq's unused dictionary rows from the output layer
    # (Wav2Vec2ASRBundle._get_state_dict); a file downloaded by hand still has them.
    remove = getattr(bundle, "_remove_aux_axis", ())
    if remove and state["aux.weight"].size(0) != len(bundle.get_labels()):
        for key in ("aux.weight", "aux.bias"):
            t = state[key]
            state[key] = torch.stack([t[i] for i in range(t.size(0)) if i not in remove])
    return state


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default="WAV2VEC2_ASR_BASE_960H", help="torchaudio.pipelines ASR bundle")
    ap.add_argument("--out", help="output path without extension: writes OUT.pt and OUT.json")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", help="the bundle's .pth file, downloaded elsewhere from --print-url's address")
    src.add_argument("--random-weights", action="store_true", help="architecture only, random parameters")
    ap.add_argument("--seed", type=int, default=0, help="for --random-weights")
    ap.add_argument("--list", action="store_true", help="print the ASR bundles and exit")
    ap.add_argument("--print-url", action="store_true", help="print where the bundle's weights are downloaded from")
    a = ap.parse_args()

    if a.list:
        print("\n".join(asr_bundles()))
        return 0
    bundle = getattr(torchaudio.pipelines, a.bundle, None)
    if not isinstance(bundle, torchaudio.pipelines.Wav2Vec2ASRBundle):
        print(f"export_wav2vec2: {a.bundle} is not a torchaudio ASR bundle (one with labels); "
              f"choose one of: {', '.join(asr_bundles())}", file=sys.stderr)
        return 2
    if a.print_url:
        print(WEIGHTS_URL.format(bundle._path))
        return 0
    if not a.out:
        ap.error("--out is required")

    params = dict(bundle._params)
    hop, receptive = frame_geometry(params)
    normalize = needs_normalisation(bundle, params)
    model = None
    if a.random_weights:
        torch.manual_seed(a.seed)
        model = wav2vec2_model(**params)
        source = f"torchaudio {a.bundle} architecture, random weights (seed {a.seed})"
    elif a.weights:
        model = wav2vec2_model(**params)
        try:
            model.load_state_dict(load_weights(bundle, a.weights))
        except Exception as e:  # noqa: BLE001 (torch.load raises whatever unpickling a wrong file raises)
            print(f"export_wav2vec2: {a.weights}: not the weights of {a.bundle} ({e}); download "
                  f"{WEIGHTS_URL.format(bundle._path)}", file=sys.stderr)
            return 1
        source = f"torchaudio {a.bundle}, weights {os.path.basename(a.weights)}"
    else:
        # Downloads into torch.hub's cache (~/.cache/torch/hub/checkpoints). Not bundle.get_model():
        # torchaudio >= 2.0 wraps the large models in its own normalisation, which Export adds here.
        model = wav2vec2_model(**params)
        model.load_state_dict(bundle._get_state_dict(None))
        source = f"torchaudio {a.bundle}"
    model = model.eval()

    labels = [label.lower() for label in bundle.get_labels()]
    if len(set(labels)) != len(labels):
        print(f"export_wav2vec2: {a.bundle}'s labels collide when lower-cased: {labels}", file=sys.stderr)
        return 1
    scripted = torch.jit.script(Export(model, normalize))

    # The contract, checked on this model before anything is written: label columns, frame count.
    n = receptive + 7 * hop + 123
    with torch.inference_mode():
        emissions, _ = scripted(torch.zeros(1, n).uniform_(-0.1, 0.1), torch.tensor([n]))
    frames = (n - receptive) // hop + 1
    if tuple(emissions.shape) != (1, frames, len(labels)):
        print(f"export_wav2vec2: {n} samples gave emissions {tuple(emissions.shape)}, expected "
              f"(1, {frames}, {len(labels)})", file=sys.stderr)
        return 1
    total = emissions.exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4), "log_softmax missing"

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    scripted.save(a.out + ".pt")
    sidecar = {
        "labels": labels,
        "blank": 0,
        "star": None,
        "word_separator": "|",
        "sample_rate": int(bundle.sample_rate),
        "samples_per_frame": hop,
        "outputs": "log_probs",
        # Not read by the worker; what the numbers above came from.
        "receptive_field_samples": receptive,
        "input_normalisation": "zero mean, unit variance per call (inside the model)" if normalize
                               else "none: raw waveform in [-1, 1]",
        "source": source,
    }
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{a.out}.pt: {source}: {parameters / 1e6:.1f} M parameters, {len(labels)} labels, "
          f"{hop} samples per frame ({hop / bundle.sample_rate * 1000:g} ms), receptive field {receptive} "
          f"samples, input normalisation {'on' if normalize else 'off'}; {a.out}.json beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
