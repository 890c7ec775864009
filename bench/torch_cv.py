# A side experiment, not part of the toolkit: k-fold patient-grouped cross-validation of run 22's recipe (and larger
# budgets) in PyTorch on a GPU, to measure what more compute buys before spending CPU days on it in TensorFlow.js.
#
# All k folds train at once as one network whose convolutions are grouped k ways (fold g's images are channel g of
# the input; every layer's channels are k independent blocks), so a small ResNet fills the GPU. The recipe follows
# the `gpu` preset (lib/config.ts): ResNet with basic blocks, SGD with Nesterov momentum, peak rate 0.1 after a
# one-epoch warm-up, cosine decay to 1e-4, L2 5e-4 on kernels, label smoothing 0.05, balanced class weights, dropout
# 0.2, batch 32, a moving average of the weights (0.998 per step) for validation; and the trace augmentation of
# lib/augment.ts (TRACE_AUGMENT), re-implemented on the GPU. The network is lib/models.ts's (7x7 stem from 128 px,
# batch-norm momentum 0.9 in Keras's terms, He-normal kernels, a Glorot head, pixels in [0, 1]). Written for
# docs/experiments.md ("PyTorch on a GPU"), whose first figures came from this script's first version (commit
# 1b6c74a, docs/torch-cv-h200.json), which differed in those five points; this version's are in
# docs/torch-cv-h200-matched.json.
#
#   python3 bench/torch_cv.py --zip chest_xray_train_224.zip --csv chest_xray_train_224.csv \
#       --config w16-s128-e60 --config w64-s224-e60 --out results.json
#   python3 bench/torch_cv.py --fake 400 --config w8-s32-e2   # a smoke run without data, on CPU or GPU
import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = ['normal', 'bacteria', 'virus']
TEST_COUNTS = np.array([234, 242, 148])  # the official test split, for the test estimate


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- data


def patient_of(name):
    stem = name.rsplit('/', 1)[-1].rsplit('.', 1)[0]
    m = re.match(r'(person\d+)_', stem, re.I)
    if m:
        return m.group(1).lower()
    m = re.match(r'((?:NORMAL2-)?IM-\d+)', stem, re.I)
    return m.group(1).upper() if m else stem


def load_real(zip_path, csv_path):
    from PIL import Image
    meta = {}
    with open(csv_path, newline='') as f:
        for row in csv.DictReader(f):
            meta[row['file']] = (row['kind'], row['derived_from'])
    zf = zipfile.ZipFile(zip_path)
    names = sorted(n for n in zf.namelist() if n.lower().endswith(('.jpeg', '.jpg', '.png')))
    blobs = [zf.read(n) for n in names]

    def decode(b):
        im = Image.open(io.BytesIO(b)).convert('L')
        if im.size != (224, 224):
            im = im.resize((224, 224), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(16) as pool:
        images = list(pool.map(decode, blobs))
    labels, groups, patients = [], [], []
    for n in names:
        base = n.rsplit('/', 1)[-1]
        kind, derived = meta[base]
        labels.append(CLASSES.index(kind))
        groups.append(derived)
        patients.append(patient_of(base))
    return np.stack(images), np.array(labels), np.array(groups), np.array(patients)


def load_fake(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    base = rng.integers(0, 255, (n, 224, 224)).astype(np.float32) * 0.2
    yy, xx = np.mgrid[0:224, 0:224]
    for c in range(3):  # a separable signal: a bright square whose place depends on the class
        m = labels == c
        base[m] += 120 * ((np.abs(yy - 60 - 50 * c) < 25) & (np.abs(xx - 112) < 40))
    groups = np.array(['full-res', 'resized-squashed-224x224', 'resized-squashed-227x227'])[rng.integers(0, 3, n)]
    patients = np.array([f'p{i // 2}' for i in range(n)])
    return np.clip(base, 0, 255).astype(np.uint8), labels, groups, patients


def grouped_folds(labels, patients, k, seed):
    """Fold index per image: patients shuffled within their majority label, dealt round-robin to k folds."""
    rng = np.random.default_rng(seed)
    by_patient = {}
    for i, p in enumerate(patients):
        by_patient.setdefault(p, []).append(i)
    strata = {c: [] for c in range(3)}
    for p in sorted(by_patient):
        idx = by_patient[p]
        strata[int(np.bincount(labels[idx], minlength=3).argmax())].append(p)
    fold = np.zeros(len(labels), dtype=np.int64)
    offset = 0
    for c in range(3):
        ps = strata[c]
        order = rng.permutation(len(ps))
        for j, pi in enumerate(order):
            fold[by_patient[ps[pi]]] = (j + offset) % k
        offset += len(ps)
    return fold


# ---------------------------------------------------------------- augmentation on the GPU (TRACE_AUGMENT)


def gaussian_kernels(sigma, radius):
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


def blur_each(x, sigma, radius=4):
    """x (n, S, S); a Gaussian of its own sigma per image, separable, reflect padding."""
    n, s, _ = x.shape
    k = gaussian_kernels(sigma, radius)
    y = F.pad(x[None], (radius, radius, radius, radius), mode='reflect')
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y[0]


DCT = None


def jpeg_each(x, quality):
    """x (n, S, S) in [0, 1], S a multiple of 8; luminance-only JPEG at a quality per image (IJG table, libjpeg scaling)."""
    global DCT
    n, s, _ = x.shape
    if DCT is None or DCT.device != x.device:
        i = torch.arange(8, dtype=torch.float32)
        d = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / 16) * math.sqrt(2 / 8)
        d[0] /= math.sqrt(2)
        DCT = d.to(x.device)
    base = torch.tensor([
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32, device=x.device).view(8, 8)
    q = quality.float()
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    table = torch.clamp(torch.floor((base[None] * scale[:, None, None] + 50) / 100), 1, 255)  # (n, 8, 8)
    b = (x * 255).round().view(n, s // 8, 8, s // 8, 8).permute(0, 1, 3, 2, 4) - 128
    c = DCT @ b @ DCT.T
    c = torch.round(c / table[:, None, None]) * table[:, None, None]
    b = DCT.T @ c @ DCT + 128
    return (b.clamp(0, 255).round().permute(0, 1, 3, 2, 4).reshape(n, s, s)) / 255


def clahe_each(x, grid, clip):
    """x (n, S, S) in [0, 1]; CLAHE with a grid x grid of tiles and a clip limit per image, bilinear between tiles."""
    n, s, _ = x.shape
    v = (x * 255).round().long().clamp(0, 255)
    ty = (torch.arange(s, device=x.device) * grid // s)
    tile = (ty[:, None] * grid + ty[None, :])  # (S, S)
    idx = (torch.arange(n, device=x.device)[:, None, None] * grid * grid + tile[None]) * 256 + v
    hist = torch.zeros(n * grid * grid * 256, device=x.device).index_add_(0, idx.view(-1), torch.ones(idx.numel(), device=x.device))
    hist = hist.view(n, grid * grid, 256)
    per_tile = (s / grid) ** 2
    limit = (clip[:, None, None] * per_tile / 256)
    excess = (hist - limit).clamp_min(0).sum(-1, keepdim=True)
    hist = hist.clamp(max=limit) + excess / 256
    cdf = hist.cumsum(-1)
    lut = (cdf - cdf[..., :1]) / (cdf[..., -1:] - cdf[..., :1]).clamp_min(1e-6)  # (n, g*g, 256)
    f = (torch.arange(s, device=x.device, dtype=torch.float32) + 0.5) * grid / s - 0.5
    f0 = f.floor().clamp(0, grid - 1)
    f1 = (f0 + 1).clamp(max=grid - 1)
    w = (f - f0).clamp(0, 1)
    f0, f1 = f0.long(), f1.long()

    def look(ry, rx):
        t = ry[:, None] * grid + rx[None, :]
        flat = (torch.arange(n, device=x.device)[:, None, None] * grid * grid + t[None]) * 256 + v
        return lut.view(-1)[flat]

    top = look(f0, f0) * (1 - w[None, None, :]) + look(f0, f1) * w[None, None, :]
    bottom = look(f1, f0) * (1 - w[None, None, :]) + look(f1, f1) * w[None, None, :]
    return top * (1 - w[None, :, None]) + bottom * w[None, :, None]


def augment(x, gen, cpu):
    """x (n, S, S) float in [0, 1] -> the same, with TRACE_AUGMENT's steps in lib/augment.ts's order (no flips).

    gen draws the per-image amounts on x's device; cpu (a numpy Generator) the few choices that decide shapes, so
    that no step waits for the GPU."""
    n, s, _ = x.shape
    dev = x.device

    def u(lo, hi, shape=(n,)):
        return torch.rand(shape, generator=gen, device=dev) * (hi - lo) + lo

    # rotation (7 degrees) and zoom (0.1), one bilinear resampling
    a = u(-7, 7) * math.pi / 180
    z = 1 / u(0.9, 1.1)
    theta = torch.stack([torch.stack([z * torch.cos(a), -z * torch.sin(a), torch.zeros_like(a)], 1),
                         torch.stack([z * torch.sin(a), z * torch.cos(a), torch.zeros_like(a)], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    x = F.grid_sample(x[:, None], grid, mode='bilinear', padding_mode='border', align_corners=False)[:, 0]
    # rescale 0.4: shrink by (0.6, 1] with area averaging, back up bilinearly (one factor per chunk of 8 images)
    parts = []
    for chunk in x.split(8):
        side = max(1, round(s * cpu.uniform(0.6, 1.0)))
        if side < s:
            chunk = F.interpolate(F.interpolate(chunk[:, None], size=(side, side), mode='area'), size=(s, s), mode='bilinear', align_corners=False)[:, 0]
        parts.append(chunk)
    x = torch.cat(parts)
    # blur 1.2: half a Gaussian of sigma (0, 1.2], half an unsharp mask of sigma [0.5, 1) and amount (0, 0.6]
    sharpen = torch.rand(n, generator=gen, device=dev) < 0.5
    sigma = torch.where(sharpen, u(0.5, 1.0), u(0.0, 1.2))
    blurred = blur_each(x, sigma)
    amount = u(0, 0.6)
    x = torch.where(sharpen[:, None, None], x + amount[:, None, None] * (x - blurred), blurred).clamp(0, 1)
    # JPEG at quality 40..95
    if s % 8 == 0:
        x = jpeg_each(x, torch.randint(40, 96, (n,), generator=gen, device=dev))
    # CLAHE-like local contrast with probability 0.3 (grid 4..12, at least 8 px a tile; clip [2, 4); blend (0.25, 1])
    pick = torch.from_numpy(np.nonzero(cpu.random(n) < 0.3)[0]).to(dev, non_blocking=True)
    if len(pick):
        g = max(1, min(int(cpu.integers(4, 13)), s // 8))  # one grid per batch
        eq = clahe_each(x[pick], g, u(2, 4, (len(pick),)))
        wgt = u(0.25, 1, (len(pick),))[:, None, None]
        x = x.clone()
        x[pick] = x[pick] * (1 - wgt) + eq * wgt
    # intensity normalisation with probability 0.3: mean [0.4, 0.6), sd [0.15, 0.25), gain at most 10
    norm = torch.rand(n, generator=gen, device=dev) < 0.3
    mean = x.mean((1, 2), keepdim=True)
    sd = x.std((1, 2), keepdim=True)
    gain = (u(0.15, 0.25)[:, None, None] / sd.clamp_min(1e-6)).clamp(max=10)
    normed = ((x - mean) * gain + u(0.4, 0.6)[:, None, None]).clamp(0, 1)
    x = torch.where(norm[:, None, None], normed, x)
    # gamma 0.3, contrast 0.1, brightness 0.05
    x = x.clamp_min(0) ** torch.exp(u(-0.3, 0.3))[:, None, None]
    m = x.mean((1, 2), keepdim=True)
    x = (x - m) * u(0.9, 1.1)[:, None, None] + m + u(-0.05, 0.05)[:, None, None]
    return x.clamp(0, 1)


# ---------------------------------------------------------------- the grouped network: k ResNets in one


BN = dict(eps=1e-3, momentum=0.1)  # Keras's momentum 0.9 (lib/models.ts BN_MOMENTUM) in PyTorch's terms


def he_normal(conv_layer):
    # tf.initializers.heNormal: a normal truncated at two standard deviations, sqrt(2 / fan_in); fan_in per group
    fan_in = conv_layer.weight.shape[1] * conv_layer.weight.shape[2] * conv_layer.weight.shape[3]
    std = math.sqrt(2 / fan_in)
    nn.init.trunc_normal_(conv_layer.weight, std=std, a=-2 * std, b=2 * std)
    return conv_layer


def conv(cin, cout, k, stride, g):
    return he_normal(nn.Conv2d(cin * g, cout * g, k, stride, k // 2, groups=g, bias=False))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, g):
        super().__init__()
        self.c1, self.b1 = conv(cin, cout, 3, stride, g), nn.BatchNorm2d(cout * g, **BN)
        self.c2, self.b2 = conv(cout, cout, 3, 1, g), nn.BatchNorm2d(cout * g, **BN)
        nn.init.zeros_(self.b2.weight)  # the residual branch's last BN starts at zero, as lib/models.ts does
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(conv(cin, cout, 1, stride, g), nn.BatchNorm2d(cout * g, **BN))

    def forward(self, x):
        r = F.relu(self.b1(self.c1(x)))
        r = self.b2(self.c2(r))
        return F.relu((x if self.proj is None else self.proj(x)) + r)


class GroupedResNet(nn.Module):
    def __init__(self, g, width, size, depth=(2, 2, 2, 2), dropout=0.2):
        super().__init__()
        self.g = g
        k = 7 if size >= 128 else 5  # lib/models.ts RESNET_LARGE_STEM_FROM
        self.stem = nn.Sequential(he_normal(nn.Conv2d(g, width * g, k, 2, k // 2, groups=g, bias=False)),
                                  nn.BatchNorm2d(width * g, **BN), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for s, n in enumerate(depth):
            cout = width * 2 ** s
            for i in range(n):
                blocks.append(Block(cin, cout, 2 if s > 0 and i == 0 else 1, g))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        limit = math.sqrt(6 / (cin + 3))  # Glorot uniform, as the TensorFlow.js head
        self.head_w = nn.Parameter(torch.empty(g, cin, 3).uniform_(-limit, limit))
        self.head_b = nn.Parameter(torch.zeros(g, 3))
        self.c = cin

    def forward(self, x):  # x (B, g, S, S) -> logits (B, g, 3)
        y = self.blocks(self.stem(x))
        y = self.drop(y.mean((2, 3)).view(-1, self.g, self.c))
        return torch.einsum('bgc,gck->bgk', y, self.head_w) + self.head_b


# ---------------------------------------------------------------- metrics


def auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float('nan')
    order = np.argsort(np.concatenate([pos, neg]), kind='mergesort')
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    # average ranks for ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, np.arange(1, len(order) + 1))
    ranks[order] = (sums / counts)[inv]
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def metrics(prob, y, groups):
    pred = prob.argmax(1)
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    recall = np.diag(cm) / cm.sum(1).clip(1)
    precision = np.diag(cm) / cm.sum(0).clip(1)
    f1 = 2 * precision * recall / (precision + recall).clip(1e-12)
    pn = y > 0
    bvv = prob[pn, 2] / (prob[pn, 1] + prob[pn, 2]).clip(1e-12)
    out = {
        'n': int(len(y)), 'accuracy': float((pred == y).mean()), 'macroF1': float(f1.mean()),
        'recall': [float(r) for r in recall], 'testEstimate': float((recall * TEST_COUNTS).sum() / TEST_COUNTS.sum()),
        'aucBacteriaVsVirus': auc(bvv, y[pn] == 2), 'aucNormalVsPneumonia': auc(1 - prob[:, 0], pn),
        'confusion': cm.tolist(),
    }
    for gname in ('full-res', 'resized-squashed-224x224', 'resized-squashed-227x227'):
        m = groups == gname
        if m.any():
            out[f'accuracy[{gname}]'] = float((pred[m] == y[m]).mean())
    fr = (groups == 'full-res') & pn
    out['aucBacteriaVsVirus[full-res]'] = auc(bvv[fr[pn]], y[fr] == 2) if fr.any() else float('nan')
    return out


# ---------------------------------------------------------------- one configuration, all folds at once


def run_config(cfg, images224, labels, groups, fold, k, seed, dev, deadline, on_epoch):
    width, size, epochs = cfg['width'], cfg['size'], cfg['epochs']
    batch, peak, floor, wd = 32, cfg.get('lr', 0.1), 1e-4, 5e-4
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    cpu = np.random.default_rng(seed)
    x = torch.from_numpy(images224).to(dev)
    if size != 224:
        x = torch.cat([F.interpolate(c[:, None].float(), size=(size, size), mode='bilinear', antialias=True, align_corners=False)[:, 0].round().clamp(0, 255).to(torch.uint8)
                       for c in x.split(512)])
    y = torch.from_numpy(labels).to(dev)
    train_idx = [np.nonzero(fold != f)[0] for f in range(k)]
    val_idx = [np.nonzero(fold == f)[0] for f in range(k)]
    steps = min(len(t) for t in train_idx) // batch
    total = steps * epochs
    cw = []
    for t in train_idx:
        counts = np.bincount(labels[t], minlength=3)
        cw.append(len(t) / (3 * counts))
    cw = torch.tensor(np.array(cw), dtype=torch.float32, device=dev)  # (k, 3)

    net = GroupedResNet(k, width, size, depth=cfg.get('depth', (2, 2, 2, 2))).to(dev).to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 3 or n == 'head_w']
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 3 or n == 'head_w')]
    opt = torch.optim.SGD([{'params': decay, 'weight_decay': 2 * wd}, {'params': rest, 'weight_decay': 0}],
                          lr=floor, momentum=0.9, nesterov=True)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.998), use_buffers=True)
    vmax = max(len(v) for v in val_idx)
    vpad = torch.stack([torch.from_numpy(np.resize(v, vmax)) for v in val_idx], 1).to(dev)  # (vmax, k)
    history = []
    best = [(-1.0, None, -1)] * k
    step = 0
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perms = torch.stack([torch.from_numpy(np.random.default_rng([seed, epoch, f]).permutation(train_idx[f])[:steps * batch]) for f in range(k)], 1).to(dev)
        for s in range(steps):
            if step < steps:  # one epoch of linear warm-up
                lr = floor + (peak - floor) * step / steps
            else:
                p = (step - steps) / max(1, total - steps)
                lr = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * p))
            for gopt in opt.param_groups:
                gopt['lr'] = lr
            idx = perms[s * batch:(s + 1) * batch]  # (batch, k)
            xb = augment(x[idx.reshape(-1)].float() / 255, gen, cpu).view(batch, k, size, size)
            xb = xb.contiguous(memory_format=torch.channels_last)  # pixels in [0, 1], as lib/ feeds them
            yb = y[idx]  # (batch, k)
            with torch.autocast('cuda' if dev.type == 'cuda' else 'cpu', dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
                logits = net(xb).float()
            target = F.one_hot(yb, 3).float() * (1 - 0.05) + 0.05 / 3
            per = -(target * F.log_softmax(logits, -1)).sum(-1)  # (batch, k)
            w = cw.gather(1, yb.T).T  # (batch, k)
            loss = (per * w).mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(net)
            step += 1
        # validation of the weight average, each fold on its own patients
        ema.eval()
        probs = []
        with torch.no_grad(), torch.autocast('cuda' if dev.type == 'cuda' else 'cpu', dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
            for c in vpad.split(256):
                xv = (x[c.reshape(-1)].float() / 255).view(len(c), k, size, size).contiguous(memory_format=torch.channels_last)
                probs.append(F.softmax(ema(xv).float(), -1))
        probs = torch.cat(probs).cpu().numpy()  # (vmax, k, 3)
        row = {'epoch': epoch + 1, 'seconds': time.time() - t0, 'folds': []}
        for f in range(k):
            v = val_idx[f]
            pf = probs[:len(v), f]
            m = metrics(pf, labels[v], groups[v])
            row['folds'].append({'accuracy': m['accuracy'], 'macroF1': m['macroF1']})
            if m['macroF1'] > best[f][0]:
                best[f] = (m['macroF1'], pf.copy(), epoch + 1)
            if epoch == epochs - 1:
                row.setdefault('last', []).append(pf.copy())
        history.append({kk: vv for kk, vv in row.items() if kk != 'last'})
        on_epoch(cfg['name'], history[-1])
        if time.time() > deadline and epoch < epochs - 1:
            return {'name': cfg['name'], 'stopped': f'deadline after epoch {epoch + 1}', 'history': history}
    # pooled out-of-fold predictions: every image once, from the fold that did not train on it
    def pooled(pick):
        prob = np.zeros((len(labels), 3))
        for f in range(k):
            prob[val_idx[f]] = pick(f)
        return prob
    last = pooled(lambda f: row['last'][f])
    bestp = pooled(lambda f: best[f][1])
    return {
        'name': cfg['name'], 'config': cfg, 'seconds': time.time() - t0, 'folds': k,
        # bestOnVal: each fold's epoch of best macro-F1 on its own validation images, scored on them: optimistic
        'last': metrics(last, labels, groups), 'bestOnVal': metrics(bestp, labels, groups),
        'bestEpochs': [b[2] for b in best], 'history': history,
        'lastPerFold': [metrics(last[val_idx[f]], labels[val_idx[f]], groups[val_idx[f]])['accuracy'] for f in range(k)],
    }


def parse_config(text):
    m = re.fullmatch(r'w(\d+)-s(\d+)-e(\d+)((?:-[a-z]+[0-9.,]+)*)', text)
    if not m:
        raise SystemExit(f'bad --config "{text}": expected wWIDTH-sSIZE-eEPOCHS[-lrRATE][-dA,B,C,D], e.g. w16-s128-e60')
    cfg = {'name': text, 'width': int(m.group(1)), 'size': int(m.group(2)), 'epochs': int(m.group(3))}
    for part in filter(None, m.group(4).split('-')):
        key, val = re.match(r'([a-z]+)(.*)', part).groups()
        if key == 'lr':
            cfg['lr'] = float(val)
        elif key == 'd':
            cfg['depth'] = tuple(int(v) for v in val.split(','))
        else:
            raise SystemExit(f'bad --config part "{part}" in "{text}"')
    return cfg


def main():
    ap = argparse.ArgumentParser(description='k-fold patient-grouped cross-validation of the training recipe in PyTorch')
    ap.add_argument('--zip')
    ap.add_argument('--csv')
    ap.add_argument('--fake', type=int, default=0, help='generated images instead of the zip (smoke test)')
    ap.add_argument('--config', action='append', required=True)
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--budget', type=float, default=1e9, help='seconds; no epoch starts after it')
    ap.add_argument('--out', default='torch-cv.json')
    a = ap.parse_args()
    start = time.time()
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if a.fake:
        images, labels, groups, patients = load_fake(a.fake)
    else:
        images, labels, groups, patients = load_real(a.zip, a.csv)
    fold = grouped_folds(labels, patients, a.folds, a.seed)
    log(f'{len(labels)} images, {len(set(patients))} patients, folds {np.bincount(fold).tolist()}, '
        f'device {torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}, loaded in {time.time() - start:.1f} s')
    results = {'device': torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu', 'torch': torch.__version__,
               'images': int(len(labels)), 'folds': a.folds, 'seed': a.seed, 'runs': []}

    def on_epoch(name, h):
        accs = ' '.join(f'{f["accuracy"]:.3f}' for f in h['folds'])
        log(f'{name} epoch {h["epoch"]} {h["seconds"]:.0f} s  val acc per fold {accs}')

    for text in a.config:
        cfg = parse_config(text)
        r = run_config(cfg, images, labels, groups, fold, a.folds, a.seed, dev, start + a.budget, on_epoch)
        results['runs'].append(r)
        with open(a.out + '.part', 'w') as f:
            json.dump(results, f, indent=1)
        os.replace(a.out + '.part', a.out)
        if 'last' in r:
            log(json.dumps({'name': r['name'], 'seconds': round(r['seconds']),
                            'last': {kk: r['last'][kk] for kk in r['last'] if kk != 'confusion'},
                            'bestOnVal': {kk: r['bestOnVal'][kk] for kk in ('accuracy', 'testEstimate', 'aucBacteriaVsVirus', 'accuracy[full-res]')},
                            'lastPerFold': r['lastPerFold']}))
        if time.time() > start + a.budget:
            log('budget spent; the remaining configurations were not run')
            break


if __name__ == '__main__':
    sys.exit(main())
