"""CTC forced alignment in numpy, the reference the Python benchmarks share (bench/accuracy.py,
bench/throughput_ref.py): transcript to token ids, and the Viterbi state path with full
back-pointers over [blank, t1, blank, t2, ..., blank]. float32 scores, as a researcher's
numpy/PyTorch script would keep them.
"""
import numpy as np


def encode(labels, sep, text):
    """Token ids with the separator between words, and each kept word's (text, first, last token)."""
    index = {c: i for i, c in enumerate(labels)}
    tokens, words = [], []
    for w in text.split():
        ids = [index[c] for c in w.lower() if c in index and c != sep]
        if not ids:
            continue
        if tokens:
            tokens.append(index[sep])
        words.append((w, len(tokens), len(tokens) + len(ids) - 1))
        tokens.extend(ids)
    return tokens, words


def viterbi(logp, tokens, blank):
    """CTC forced alignment: the best state path over [blank, t1, blank, t2, ..., blank]."""
    T = logp.shape[0]
    ext = np.full(2 * len(tokens) + 1, blank)
    ext[1::2] = tokens
    S = len(ext)
    skip = np.zeros(S, bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    score = np.full(S, -np.inf, np.float32)
    score[:2] = logp[0, ext[:2]]
    back = np.zeros((T, S), np.int8)
    cand = np.full((3, S), -np.inf, np.float32)
    cols = np.arange(S)
    for t in range(1, T):
        cand[0] = score
        cand[1, 1:] = score[:-1]
        cand[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        choice = cand.argmax(0)
        back[t] = choice
        score = cand[choice, cols] + logp[t, ext]
    s = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    if not np.isfinite(score[s]):
        raise ValueError("transcript longer than the audio allows")
    path = np.zeros(T, np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= back[t, s]
    return path
