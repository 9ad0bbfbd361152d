"""A plain-NumPy MUSIQ forward pass, written from the original's semantics.

Independent of flax: explicit im2col convolutions with TF "SAME" padding,
weight standardisation `(w - mean) / (std + 1e-5)`, GroupNorm(32) with eps
1e-6 (root) and 1e-4 (units), SAME max-pool, tanh-GELU, LayerNorm eps 1e-6,
and `flax.nn`'s attention: a -1e10 bias where the query OR key is padding.
Runs in float64 so differences measure our float32 implementation.
"""

import math

import numpy as np


def _same_pads(size, k, s):
  out = math.ceil(size / s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2, out


def conv2d(x, w, stride):
  """x [n, h, w, c], w [kh, kw, c, o], TF SAME padding."""
  n, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  pt, pb, oh = _same_pads(h, kh, stride)
  pl, pr, ow = _same_pads(wd, kw, stride)
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  out = np.zeros((n, oh, ow, o))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
      out += patch @ w[i, j]
  return out


def max_pool(x, k=3, s=2):
  n, h, w, c = x.shape
  pt, pb, oh = _same_pads(h, k, s)
  pl, pr, ow = _same_pads(w, k, s)
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
  out = np.full((n, oh, ow, c), -np.inf)
  for i in range(k):
    for j in range(k):
      out = np.maximum(out, xp[:, i:i + s * oh:s, j:j + s * ow:s, :])
  return out


def std_kernel(w):
  w = w - w.mean(axis=(0, 1, 2))
  return w / (w.std(axis=(0, 1, 2)) + 1e-5)


def group_norm(x, scale, bias, eps, groups=32):
  n, h, w, c = x.shape
  g = x.reshape(n, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  g = (g - mean) / np.sqrt(var + eps)
  return g.reshape(n, h, w, c) * scale + bias


def layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def gelu(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def relu(x):
  return np.maximum(x, 0)


def forward(p, patches, spatial, scale, mask, num_heads):
  """p: flat '/'-keyed params; inputs [b, l, ...]. Returns head outputs."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  b, l, c = patches.shape
  ps = int(math.sqrt(c // 3))
  x = patches.reshape(b * l, ps, ps, 3).astype(np.float64)
  x = conv2d(x, std_kernel(p["conv_root/kernel"]), 2)
  x = relu(group_norm(x, p["gn_root/scale"], p["gn_root/bias"], 1e-6))
  x = max_pool(x)
  u = "block1/unit1/"
  gn = lambda y, n: group_norm(y, p[u + n + "/scale"], p[u + n + "/bias"], 1e-4)
  res = gn(conv2d(x, std_kernel(p[u + "conv_proj/kernel"]), 1), "gn_proj")
  y = relu(gn(conv2d(x, std_kernel(p[u + "conv1/kernel"]), 1), "gn1"))
  y = relu(gn(conv2d(y, std_kernel(p[u + "conv2/kernel"]), 1), "gn2"))
  y = gn(conv2d(y, std_kernel(p[u + "conv3/kernel"]), 1), "gn3")
  x = relu(res + y).reshape(b, l, -1)
  x = x @ p["embedding/kernel"] + p["embedding/bias"]
  t = "Transformer/"
  x = x + p[t + "posembed_input/pos_embedding"][0][spatial]
  x = x + p[t + "scaleembed_input/scale_embedding"][0][scale]
  d = x.shape[-1]
  x = np.concatenate([np.broadcast_to(p[t + "cls"], (b, 1, d)), x], axis=1)
  m = np.concatenate([np.ones((b, 1)), mask], axis=1) > 0
  bias = np.where(m[:, :, None] & m[:, None, :], 0.0, -1e10)[:, None]
  i = 0
  while f"{t}encoderblock_{i}/LayerNorm_0/scale" in p:
    e = f"{t}encoderblock_{i}/"
    a = e + "MultiHeadDotProductAttention_1/"
    h = layer_norm(x, p[e + "LayerNorm_0/scale"], p[e + "LayerNorm_0/bias"])
    q, k, v = (np.einsum("bld,dhk->bhlk", h, p[a + n + "/kernel"]) +
               p[a + n + "/bias"][None, :, None, :]
               for n in ("query", "key", "value"))
    logits = np.einsum("bhqk,bhlk->bhql", q / math.sqrt(q.shape[-1]), k) + bias
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhql,bhlk->bqhk", w, v)
    x = x + np.einsum("bqhk,hkd->bqd", o, p[a + "out/kernel"]) + p[a + "out/bias"]
    h = layer_norm(x, p[e + "LayerNorm_2/scale"], p[e + "LayerNorm_2/bias"])
    h = gelu(h @ p[e + "MlpBlock_3/Dense_0/kernel"] +
             p[e + "MlpBlock_3/Dense_0/bias"])
    x = x + h @ p[e + "MlpBlock_3/Dense_1/kernel"] + p[e + "MlpBlock_3/Dense_1/bias"]
    i += 1
  x = layer_norm(x, p[t + "encoder_norm/scale"], p[t + "encoder_norm/bias"])
  return x[:, 0] @ p["head/kernel"] + p["head/bias"]
