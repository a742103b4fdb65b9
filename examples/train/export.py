"""Exports a training checkpoint as the worker's TorchScript model and sidecar JSON.

    /usr/bin/python3 examples/train/export.py --ckpt RUN/best.pt --out examples/models/en_char_ctc

writes en_char_ctc.pt (torch.jit.script, eval mode) and en_char_ctc.json (docs/worker-protocol.md),
after checking that the scripted model matches the eager one and takes 320 to 10 s of samples.
"""
import argparse
import json

import torch

import model as M


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True, help="output path without extension")
    a = ap.parse_args()
    ckpt = torch.load(a.ckpt, map_location="cpu")
    net = M.CharCtc()
    net.load_state_dict(ckpt["model"])
    net.eval()
    scripted = torch.jit.script(net)
    torch.manual_seed(0)
    with torch.no_grad():
        for n in (320, 321, 399, 400, 16000, 160000):
            x = torch.randn(1, n) * 0.1
            e1, l1 = net(x, torch.tensor([n]))
            e2, l2 = scripted(x, torch.tensor([n]))
            assert e1.shape == e2.shape and e1.shape[2] == len(M.LABELS), (n, e1.shape)
            assert int(l2[0]) == e2.shape[1] == (n // 160 + 2) // 2, (n, l2, e2.shape)
            assert torch.allclose(e1, e2, atol=1e-4), n
    scripted.save(a.out + ".pt")
    with open(a.out + ".json", "w") as f:
        json.dump(M.sidecar(), f)
        f.write("\n")
    print(f"wrote {a.out}.pt and {a.out}.json (step {ckpt.get('step')}, validation CER "
          f"{ckpt.get('val_cer')})")


if __name__ == "__main__":
    main()
