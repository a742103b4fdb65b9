#!/usr/bin/python3
"""Alignment speed peer: the familiar full trellis-and-backtrack CTC forced alignment in PyTorch.

Subcommands (run by bench/align_speed.sh):
  gen DIR --frames T --tokens L --labels C --seed N   write emissions.npy [T, C] float32 log-probs,
                                                      tokens.npy [L] int32 and planted.npy (token starts)
  align DIR                                           align with the full T x S trellis, write
                                                      py_spans.npy [L, 2] (start, end) and py.json (timing)
  compare DIR                                         check the C++ and Python spans agree, print the ratio

The algorithm keeps the whole frames x states trellis of float32 scores (S = 2L + 1 CTC states:
blanks between tokens, a repeated token needs a blank between its copies), fills it frame by frame
with vectorised torch ops, then backtracks from the better of the last two states by recomputing
which predecessor gave each cell its score (stay, then advance, then skip on ties; the same order
the C++ aligner uses). Written for this benchmark, in the style of the torchaudio forced-alignment
tutorial, with the standard CTC topology.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch


def gen(args):
    rng = np.random.default_rng(args.seed)
    C, L, T, blank = args.labels, args.tokens, args.frames, 0
    tokens = rng.integers(1, C, size=L).astype(np.int32)
    path = []
    starts = []
    for k in range(L):
        gap = int(rng.integers(0, 3))
        if k > 0 and tokens[k] == tokens[k - 1] and gap == 0:
            gap = 1
        if k == L // 3:
            gap += T // 20  # one long silence, as in real recordings
        path += [blank] * gap
        starts.append(len(path))
        path += [int(tokens[k])] * int(rng.integers(1, 4))
    if len(path) > T:
        sys.exit(f"gen: {L} tokens need {len(path)} frames but only {T} were asked for")
    path += [blank] * (T - len(path))
    # Log-probabilities: the planted label gets most of the mass, the rest share the remainder with
    # random weights, so every frame is a proper distribution and the planted path is the best one.
    logits = rng.normal(0.0, 1.0, size=(T, C)).astype(np.float32)
    logits[np.arange(T), np.array(path)] += 6.0
    em = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy().astype(np.float32)
    os.makedirs(args.dir, exist_ok=True)
    np.save(os.path.join(args.dir, "emissions.npy"), np.ascontiguousarray(em))
    np.save(os.path.join(args.dir, "tokens.npy"), tokens)
    np.save(os.path.join(args.dir, "planted.npy"), np.array(starts, dtype=np.int64))
    print(f"generated {T} frames x {C} labels, {L} tokens (seed {args.seed}) in {args.dir}")


def trellis_align(em, tokens, blank=0):
    """Full trellis forward pass and backtrack. Returns (spans [L, 2], total log-prob)."""
    T, C = em.shape
    L = tokens.shape[0]
    S = 2 * L + 1
    labels = torch.full((S,), blank, dtype=torch.long)
    labels[1::2] = tokens
    skip = torch.zeros(S, dtype=torch.bool)
    if L > 1:
        skip[3::2] = tokens[1:] != tokens[:-1]
    neg = torch.tensor(float("-inf"))
    trellis = torch.full((T, S), float("-inf"), dtype=torch.float32)
    trellis[0, 0] = em[0, blank]
    trellis[0, 1] = em[0, tokens[0]]
    ninf1 = torch.full((1,), float("-inf"))
    ninf2 = torch.full((2,), float("-inf"))
    for t in range(1, T):
        prev = trellis[t - 1]
        adv = torch.cat((ninf1, prev[:-1]))
        sk = torch.where(skip, torch.cat((ninf2, prev[:-2])), neg)
        torch.maximum(torch.maximum(prev, adv), sk, out=trellis[t])
        trellis[t] += em[t, labels]
    # Backtrack over the stored trellis.
    tr = trellis.numpy()
    skip_np = skip.numpy()
    s = S - 1 if tr[T - 1, S - 1] >= tr[T - 1, S - 2] else S - 2
    total = float(tr[T - 1, s])
    spans = np.full((L, 2), -1, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        if s & 1:
            k = s >> 1
            if spans[k, 1] < 0:
                spans[k, 1] = t + 1
            spans[k, 0] = t
        if t == 0:
            break
        p = tr[t - 1]
        best, step = p[s], 0
        if s >= 1 and p[s - 1] > best:
            best, step = p[s - 1], 1
        if skip_np[s] and p[s - 2] > best:
            best, step = p[s - 2], 2
        s -= step
    return spans, total


def align(args):
    torch.set_num_threads(1)  # the C++ aligner is single-threaded; compare like with like
    em = torch.from_numpy(np.load(os.path.join(args.dir, "emissions.npy")))
    tokens = torch.from_numpy(np.load(os.path.join(args.dir, "tokens.npy")).astype(np.int64))
    wall_s = float("inf")
    for _ in range(3):  # best of 3, as the C++ driver does: the machine is shared
        start = time.perf_counter()
        spans, total = trellis_align(em, tokens)
        wall_s = min(wall_s, time.perf_counter() - start)
    np.save(os.path.join(args.dir, "py_spans.npy"), spans)
    T, S = em.shape[0], 2 * tokens.shape[0] + 1
    info = {"wall_s": wall_s, "log_prob": total, "trellis_bytes": T * S * 4}
    with open(os.path.join(args.dir, "py.json"), "w") as f:
        json.dump(info, f)
    print(f"python full trellis: {wall_s:.3f} s (best of 3), trellis {T * S * 4 / 2**20:.1f} MiB, log-prob {total:.4f}")


def compare(args):
    d = args.dir
    py = np.load(os.path.join(d, "py_spans.npy"))
    planted = np.load(os.path.join(d, "planted.npy"))
    py_info = json.load(open(os.path.join(d, "py.json")))
    ok = True
    for name in ("exact", "banded"):
        cpp = np.loadtxt(os.path.join(d, f"cpp_{name}_spans.txt"), dtype=np.int64).reshape(-1, 2)
        cpp_info = json.load(open(os.path.join(d, f"cpp_{name}.json")))
        same = cpp.shape == py.shape and bool((cpp == py).all())
        ok = ok and same
        ratio = py_info["wall_s"] / cpp_info["wall_s"]
        print(f"C++ {name:6s}: {cpp_info['wall_s']:.3f} s, work {cpp_info['work_bytes'] / 2**20:.1f} MiB "
              f"(band {cpp_info['band_states']} of {cpp_info['states']} states), log-prob {cpp_info['log_prob']:.4f}; "
              f"same path as python: {'yes' if same else 'NO'}; speed ratio python/C++ = {ratio:.1f}x")
    # The noise can make a neighbouring path score higher than the planted one in a few places;
    # what matters is that both implementations agree, this only shows the emissions are sane.
    same_start = int((py[:, 0] == planted).sum())
    print(f"token starts equal to the planted ones: {same_start} of {len(planted)}")
    if not ok:
        sys.exit("align_speed: the C++ and Python paths differ")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--frames", type=int, default=15000)
    g.add_argument("--tokens", type=int, default=3000)
    g.add_argument("--labels", type=int, default=32)
    g.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("align")
    a.add_argument("dir")
    c = sub.add_parser("compare")
    c.add_argument("dir")
    args = p.parse_args()
    {"gen": gen, "align": align, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
