"""A plain, materialised implementation of the reference AdaAttN (spec), for parity tests.

Written straight from the specification and independent of ``adaattn_model``: it works
on state dicts in the *released* key layouts, builds the full attention matrix, seeds the
global RNG like the reference (inside ``fork_rng``, so tests stay isolated), and runs in
any dtype: float64 for the oracle, float32 for the "materialised reference" benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VGG_CONVS = (0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51)
VGG_POOLS = (7, 14, 27, 40)
VGG_STAGES = ((0, 4), (4, 11), (11, 18), (18, 31), (31, 44))  # children -> relu1_1 .. relu5_1


def child(index: int) -> str:
    """What child ``index`` of the 53-child VGG Sequential is."""
    if index in VGG_CONVS:
        return "conv"
    if index in VGG_POOLS:
        return "pool"
    if index + 1 in VGG_CONVS:
        return "pad"
    return "relu"


def conv(x, sd, prefix):
    return F.conv2d(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"])


def pad(x):
    return F.pad(x, (1, 1, 1, 1), mode="reflect")


def vgg_features(vgg, x):
    feats = []
    for start, stop in VGG_STAGES:
        for i in range(start, stop):
            kind = child(i)
            if kind == "conv":
                x = conv(x, vgg, str(i))
            elif kind == "pad":
                x = pad(x)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2, 2, 0, ceil_mode=True)
        feats.append(x)
    return feats


def calc_mean_std(x, eps=1e-5):
    n, c = x.shape[:2]
    var = x.reshape(n, c, -1).var(dim=2) + eps
    return x.reshape(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def mvn(x):
    mean, std = calc_mean_std(x)
    return (x - mean) / std


def key(feats, level):
    size = feats[level].shape[-2:]
    parts = [mvn(F.interpolate(feats[i], size=size)) for i in range(level)] + [mvn(feats[level])]
    return torch.cat(parts, dim=1)


def subsample(k, v, max_sample, seed):
    n = k.shape[-1]
    if n <= max_sample:
        return k, v
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the reference reseeds the global RNG before each layer's randperm
        index = torch.randperm(n)[:max_sample]
    return k[:, :, index], v[:, :, index]


def adaattn(content, style, content_key, style_key, params, *, max_sample, seed, kind="softmax", temperature=1.0,
            global_share=0.0):  # fmt: skip
    """The reference AdaAttN forward (params None: parameter-free). ``global_share`` moves the
    attended mean and std that far to the mean and (population) std of all style values."""
    if params is not None:
        q, k, v = conv(content_key, params, "f"), conv(style_key, params, "g"), conv(style, params, "h")
    else:
        q, k, v = content_key, style_key, style
    b, _, h, w = q.shape
    k = k.flatten(2)
    v = v.flatten(2)
    k, v = subsample(k, v, max_sample, seed)
    q = q.flatten(2).transpose(1, 2)  # [b, n_c, d]
    v = v.transpose(1, 2)  # [b, n_s, C]
    if kind == "softmax":
        s = torch.softmax(torch.bmm(q, k) / temperature, dim=-1)
    elif kind == "cosine_softmax":
        qn = q / (q.norm(dim=-1, keepdim=True) + 1e-5)
        kn = k / (k.norm(dim=1, keepdim=True) + 1e-5)
        s = torch.softmax(torch.bmm(qn, kn) / temperature, dim=-1)
    else:  # cosine: relu(cos + 1), normalised by the row sum + 1e-5
        qn = q.norm(dim=-1, keepdim=True)
        kn = k.norm(dim=1, keepdim=True)
        s = F.relu(torch.bmm(q, k) / (qn + 1e-5) / (kn + 1e-5) + 1)
        s = s / (s.sum(dim=-1, keepdim=True) + 1e-5)
    mean = torch.bmm(s, v)
    std = torch.sqrt(F.relu(torch.bmm(s, v**2) - mean**2))
    if global_share:
        whole_mean = v.mean(dim=1, keepdim=True)
        whole_std = torch.sqrt(F.relu((v**2).mean(dim=1, keepdim=True) - whole_mean**2))
        mean = (1 - global_share) * mean + global_share * whole_mean
        std = (1 - global_share) * std + global_share * whole_std
    mean = mean.view(b, h, w, -1).permute(0, 3, 1, 2)
    std = std.view(b, h, w, -1).permute(0, 3, 1, 2)
    return std * mvn(content) + mean


def up(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def decoder_tail(x, sd, prefix):
    """decoder_layer_2 of the reference (also the video decoder): convs at these indices."""
    for i in (1, 4, 7, 10, 14, 17, 21, 24):
        x = conv(pad(x), sd, f"{prefix}{i}")
        if i != 24:
            x = F.relu(x)
        if i in (10, 17):
            x = up(x)
    return x


def image_model(vgg, adaattn_3, transformer, decoder, content, style, *, seed=6666, exact=False, style_feats=None):
    """The released image model on ``content`` [N,3,H,W] and ``style`` [1|N,3,h,w].

    ``style_feats``: the style's VGG taps, when computed elsewhere (huge styles).
    """
    limit3, limit45 = (float("inf"), float("inf")) if exact else (64 * 64, 256 * 256)
    cf = vgg_features(vgg, content)
    sf = style_feats if style_feats is not None else vgg_features(vgg, style)
    if sf[0].shape[0] != cf[0].shape[0]:  # the reference needs equal batches: the caller repeats the style
        sf = [s.expand(cf[0].shape[0], -1, -1, -1) for s in sf]
    a3 = adaattn(cf[2], sf[2], key(cf, 2), key(sf, 2), adaattn_3, max_sample=limit3, seed=seed)
    p4 = {k[len("attn_adain_4_1.") :]: v for k, v in transformer.items() if k.startswith("attn_adain_4_1.")}
    p5 = {k[len("attn_adain_5_1.") :]: v for k, v in transformer.items() if k.startswith("attn_adain_5_1.")}
    a4 = adaattn(cf[3], sf[3], key(cf, 3), key(sf, 3), p4, max_sample=limit45, seed=seed)
    a5 = adaattn(cf[4], sf[4], key(cf, 4), key(sf, 4), p5, max_sample=limit45, seed=seed)
    t = conv(pad(a4 + up(a5)), transformer, "merge_conv")
    x = up(F.relu(conv(pad(t), decoder, "decoder_layer_1.1")))
    return decoder_tail(torch.cat([x, a3], dim=1), decoder, "decoder_layer_2.")


def video_model(vgg, transformer, decoder, content, style, *, seed=6666, exact=False):
    """The released video model (cosine attention at relu3_1, video decoder)."""
    cf, sf = vgg_features(vgg, content), vgg_features(vgg, style)
    if sf[0].shape[0] != cf[0].shape[0]:
        sf = [s.expand(cf[0].shape[0], -1, -1, -1) for s in sf]
    limit = float("inf") if exact else 256 * 256
    a3 = adaattn(cf[2], sf[2], key(cf, 2), key(sf, 2), transformer, max_sample=limit, seed=seed, kind="cosine")
    return decoder_tail(a3, decoder, "decoder.")


def adain_decoder(sd, x):
    """The pytorch-AdaIN decoder (convs 1, 5, 8, ..., 28 of its Sequential)."""
    for i in (1, 5, 8, 11, 14, 18, 21, 25, 28):
        x = conv(pad(x), sd, str(i))
        if i != 28:
            x = F.relu(x)
        if i in (1, 14, 21):
            x = up(x)
    return x


def restore_detail(image, content, amount, sigma=1.0):
    """In YCbCr (BT.601): the output's luma detail (luma minus its Gaussian blur, mirrored
    borders) swapped by ``amount`` for the content's; chroma kept."""
    to_ycc = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                          dtype=image.dtype)  # fmt: skip
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).view(-1, 1) * (g / g.sum()).view(1, -1)  # the 2-D kernel

    def blur(y):
        return F.conv2d(F.pad(y, (radius,) * 4, mode="reflect"), g[None, None])

    out = torch.einsum("ij,njhw->nihw", to_ycc, image)
    y_content = torch.einsum("j,njhw->nhw", to_ycc[0], content)[:, None]
    y = out[:, :1]
    out = torch.cat([y + amount * ((y_content - blur(y_content)) - (y - blur(y))), out[:, 1:]], dim=1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_ycc), out)


def lite_model(vgg, decoder, content, style, *, kind="cosine_softmax", temperature=0.03, seed=6666, exact=True,
               global_share=0.0, detail=0.0):  # fmt: skip
    """Parameter-free AdaAttN at relu4_1 decoded by the AdaIN decoder (the lite family), with
    the statistics moved ``global_share`` to the whole style's and ``detail`` of the content's
    fine luma detail put back."""
    cf, sf = vgg_features(vgg, content), vgg_features(vgg, style)
    if sf[0].shape[0] != cf[0].shape[0]:
        sf = [s.expand(cf[0].shape[0], -1, -1, -1) for s in sf]
    limit = float("inf") if exact else 256 * 256
    a4 = adaattn(cf[3], sf[3], key(cf, 3), key(sf, 3), None, max_sample=limit, seed=seed, kind=kind,
                 temperature=temperature, global_share=global_share)  # fmt: skip
    out = adain_decoder(decoder, a4)
    return restore_detail(out, content, detail) if detail else out
