"""The English character CTC model: 16 kHz waveform in, per-20 ms-frame label log-probabilities out.

TorchScript contract (docs/worker-protocol.md): forward(waveforms [1, N] float32, lengths [1] int64)
-> (emissions [B, T, C] log-probabilities, lengths [B] int64). Features are computed inside:
25 ms Hann STFT every 10 ms, 80 mel bands (HTK mel scale, 0-8 kHz, a fixed buffer), log, fixed
normalisation; then a stride-2 convolution to 20 ms frames, eight residual dilated convolutions
(about +-0.5 s of context) and a 1x1 output convolution. Frame i is centred on sample 320 * i.
"""
import math
from typing import Tuple

import torch
from torch import nn

LABELS = ["<blk>", "|"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]
SAMPLE_RATE = 16000
HOP = 160
N_FFT = 400
N_MELS = 80
SAMPLES_PER_FRAME = 2 * HOP


def mel_filterbank(n_fft=N_FFT, n_mels=N_MELS, sample_rate=SAMPLE_RATE, f_min=0.0, f_max=8000.0):
    """[n_fft // 2 + 1, n_mels] triangular filters on the HTK mel scale."""
    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2].unsqueeze(0), hz[1:-1].unsqueeze(0), hz[2:].unsqueeze(0)
    f = bins.unsqueeze(1)
    up = (f - lo) / (mid - lo)
    down = (hi - f) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def frames_for(samples: torch.Tensor) -> torch.Tensor:
    """Output frames for input lengths in samples: STFT frames N // 160 + 1, halved (ceil)."""
    return torch.div(torch.div(samples, 160, rounding_mode="floor") + 2, 2, rounding_mode="floor")


class ConvBlock(nn.Module):
    """Residual block: convolution over time, batch norm, GELU."""

    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2),
                              dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(nn.functional.gelu(self.norm(self.conv(x))))


class CharCtc(nn.Module):
    def __init__(self, channels: int = 128, dilations: Tuple[int, ...] = (1, 1, 2, 2, 1, 1, 2, 2)):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.register_buffer("mel", mel_filterbank())
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))
        self.conv1 = nn.Conv1d(N_MELS, channels, kernel_size=5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(*[ConvBlock(channels, 5, d) for d in dilations])
        self.out = nn.Conv1d(channels, len(LABELS), kernel_size=1)

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[B, N] -> normalised log-mel [B, 80, N // 160 + 1]."""
        n = waveforms.size(1)
        if n < 400:  # reflect padding needs more than n_fft / 2 samples
            waveforms = nn.functional.pad(waveforms, (0, 400 - n))
        spec = torch.stft(waveforms, 400, 160, 400, self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # [B, 201, F]
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # [B, F, 80]
        logmel = torch.log(mel + 1e-6)
        logmel = (logmel - self.feat_mean) / self.feat_std
        frames = n // 160 + 1
        return logmel[:, :frames, :].transpose(1, 2)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.features(waveforms)
        x = nn.functional.gelu(self.conv1(x))
        x = nn.functional.gelu(self.conv2(x))
        x = self.out(self.blocks(x)).transpose(1, 2)
        out_lengths = torch.clamp(frames_for(lengths), max=x.size(1))
        return torch.log_softmax(x, dim=-1), out_lengths


def sidecar() -> dict:
    return {"labels": LABELS, "blank": 0, "star": None, "word_separator": "|",
            "sample_rate": SAMPLE_RATE, "samples_per_frame": SAMPLES_PER_FRAME,
            "outputs": "log_probs"}


def encode(text: str) -> list:
    """Transcript -> label ids: words joined by '|', letters and apostrophes only."""
    index = {c: i for i, c in enumerate(LABELS)}
    words = ["".join(c for c in w.lower() if c in index and c != "|") for w in text.split()]
    return [index[c] for c in "|".join(w for w in words if w)]
