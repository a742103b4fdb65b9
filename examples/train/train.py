"""Trains the English character CTC model on espeak-ng speech made by make_data.py.

    nice -n 19 /usr/bin/python3 examples/train/train.py --data DIR --out DIR/run --seed 1 --budget-min 85

Loss: CTC over "|"-joined words, plus 0.3 x cross-entropy putting each word's first letter on the
frame where espeak-ng says the word starts (so forced alignment lands word starts on time).
Augmentation: random gain and white noise. The learning rate follows a warmup and cosine decay
over the training progress, which is the larger of steps / --steps and time / --budget-min, so
the run ends on time on a slower machine. Every --ckpt-min it scores greedy CER on 100 validation
utterances (training voices, sentences never trained on) and keeps the best as best.pt.
"""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch

import model as M
from text_gen import edit_distance


def load(path):
    d = np.load(path)
    return {"audio": d["audio"], "offsets": d["offsets"], "texts": list(d["texts"]),
            "starts": [json.loads(s) for s in d["starts"]]}


def utterance(d, i):
    return d["audio"][d["offsets"][i]:d["offsets"][i + 1]].astype(np.float32) / 32768.0


def batches(d, idx, max_seconds, r):
    idx = sorted(idx, key=lambda i: d["offsets"][i + 1] - d["offsets"][i])
    out, cur, longest = [], [], 0
    for i in idx:
        n = d["offsets"][i + 1] - d["offsets"][i]
        if cur and max(longest, n) * (len(cur) + 1) > max_seconds * 16000:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    r.shuffle(out)
    return out


def make_batch(d, ids, r, augment):
    waves = [utterance(d, i) for i in ids]
    n = max(len(w) for w in waves)
    x = torch.zeros(len(ids), n)
    for k, w in enumerate(waves):
        w = torch.from_numpy(w)
        if augment:
            w = w * 10 ** (r.uniform(-25, 3) / 20)
            if r.random() < 0.7:
                rms = float(w.pow(2).mean().sqrt()) + 1e-8
                snr_db = r.uniform(12, 45)
                w = w + torch.randn(len(w), generator=None) * rms * 10 ** (-snr_db / 20)
        x[k, :len(w)] = w
    lengths = torch.tensor([len(w) for w in waves])
    targets = [torch.tensor(M.encode(d["texts"][i])) for i in ids]
    onsets = []  # (batch index, frame, first letter id)
    for k, i in enumerate(ids):
        for word, start in zip(d["texts"][i].split(), d["starts"][i]):
            ids_ = M.encode(word)
            if ids_:
                onsets.append((k, int(round(start / 0.02)), ids_[0]))
    return x, lengths, targets, onsets


def greedy(emissions, length):
    best = emissions[:length].argmax(-1).tolist()
    out, prev = [], -1
    for b in best:
        if b != prev and b != 0:
            out.append(M.LABELS[b])
        prev = b
    return "".join(out).replace("|", " ").strip()


def cer(net, d, idx):
    """Greedy character error rate over utterances idx (batched, zero padded)."""
    net.eval()
    errors = chars = 0
    with torch.no_grad():
        x, lengths, _, _ = make_batch(d, idx, None, augment=False)
        e, l = net(x, lengths)
        for k, i in enumerate(idx):
            ref = " ".join(d["texts"][i].split())
            errors += edit_distance(greedy(e[k], int(l[k])), ref)
            chars += len(ref)
    net.train()
    return errors / chars


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--budget-min", type=float, default=85.0)
    ap.add_argument("--ckpt-min", type=float, default=8.0)
    ap.add_argument("--batch-s", type=float, default=20.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--onset-weight", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    r = random.Random(a.seed)
    t0 = time.time()

    d = load(os.path.join(a.data, "train.npz"))
    n = len(d["texts"])
    val_idx = list(range(n - 100, n))
    train_idx = list(range(n - 100))

    net = M.CharCtc()
    with torch.no_grad():  # fixed feature normalisation from 300 training utterances
        feats = torch.cat([net.features(torch.from_numpy(utterance(d, i)).unsqueeze(0))[0]
                           for i in r.sample(train_idx, 300)], dim=1)
        net.feat_mean.copy_(feats.mean(1))
        net.feat_std.copy_(feats.std(1) + 1e-3)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-2)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    log = open(os.path.join(a.out, "train.log"), "a")

    def say(msg):
        line = f"{time.time() - t0:7.0f}s {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    say(f"{len(train_idx)} training utterances, {sum(p.numel() for p in net.parameters())} parameters, args {vars(a)}")
    step, best, last_ckpt, epoch = 0, 1e9, time.time(), 0
    warmup = 100
    done = False
    while not done:
        epoch += 1
        for ids in batches(d, train_idx, a.batch_s, r):
            progress = max(step / a.steps, (time.time() - t0) / (a.budget_min * 60))
            if progress >= 1.0:
                done = True
                break
            lr = a.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
            for g in opt.param_groups:
                g["lr"] = lr
            x, lengths, targets, onsets = make_batch(d, ids, r, augment=True)
            logp, out_len = net(x, lengths)
            loss_ctc = ctc(logp.transpose(0, 1), torch.cat(targets), out_len,
                           torch.tensor([len(t) for t in targets]))
            k = torch.tensor([o[0] for o in onsets])
            f = torch.clamp(torch.tensor([o[1] for o in onsets]), max=logp.size(1) - 1)
            c = torch.tensor([o[2] for o in onsets])
            loss_onset = -logp[k, f, c].mean()
            loss = loss_ctc + a.onset_weight * loss_onset
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            step += 1
            if step % 10 == 0:
                say(f"epoch {epoch} step {step} lr {lr:.2e} ctc {loss_ctc.item():.3f} onset {loss_onset.item():.3f}")
            if time.time() - last_ckpt > a.ckpt_min * 60:
                last_ckpt = time.time()
                v = cer(net, d, val_idx)
                torch.save({"model": net.state_dict(), "step": step}, os.path.join(a.out, "last.pt"))
                if v < best:
                    best = v
                    torch.save({"model": net.state_dict(), "step": step, "val_cer": v},
                               os.path.join(a.out, "best.pt"))
                say(f"step {step} validation CER {v:.4f} (best {best:.4f})")
    v = cer(net, d, val_idx)
    torch.save({"model": net.state_dict(), "step": step}, os.path.join(a.out, "last.pt"))
    if v <= best:
        best = v
        torch.save({"model": net.state_dict(), "step": step, "val_cer": v}, os.path.join(a.out, "best.pt"))
    say(f"finished: {step} steps, {epoch} epochs, final validation CER {v:.4f}, best {best:.4f}, "
        f"{(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
