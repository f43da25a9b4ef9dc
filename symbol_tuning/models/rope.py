"""RoPE inverse frequencies, bit for bit as transformers computes them (pure numpy).

transformers builds `inv_freq` with torch float32 arithmetic on the CPU. Two details
make a plain numpy port differ by an ulp here and there (numpy's float32 power: 166 of
936 elements over the default-RoPE cases of tests/test_rope.py), and position times an
ulp is a wrong angle: cos/sin off by up to 1.5e-2 at position 131,071.

* `base ** exponents`: torch evaluates float32 pow with SLEEF's `powf_u10` (a
  double-float log/exp accurate to ~1 ulp, not correctly rounded) on whole SIMD
  chunks of 2 * lanes elements, and with libm's `powf` on the remainder. We emulate
  `powf_u10` with float32 operations and an exact float32 FMA (`_fma`), and libm
  with a float64 power rounded once: equal to glibc's `powf` for the round bases
  configs use (1e4, 5e5, 1e6...); for arbitrary bases glibc differs from it by an ulp
  in a few tail elements in 10,000 (12 of 19,776 over 309 random bases, measured).
* `scalar / tensor` is `tensor.reciprocal() * scalar` in torch (two roundings), so
  `1.0 / x` and `2 * pi / inv_freq` are written that way here too.

Everything else (float32 arange / dim, products and quotients with Python scalars
rounded to float32) is plain IEEE float32 in both libraries.

The SIMD width is the one thing torch picks per machine: 16 float lanes with
AVX-512 (torch's choice wherever the CPU has it), 8 with AVX2, 4 with NEON. It only
matters for head sizes whose half is not a multiple of 2 * lanes (e.g. 96 with
AVX-512), and there only where SLEEF and libm disagree (about 1 element in 100).
The SLEEF arithmetic follows its AVX-512 code path (Boost Software License 1.0,
https://github.com/shibatch/sleef, `xpowf` / `logkf` / `expkf`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

# transformers' names -> the rope_scaling keys each needs (yarn's factor may come from
# max_position_embeddings / original_max_position_embeddings).
_REQUIRED_KEYS = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
    "yarn": ("original_max_position_embeddings",),
}
ROPE_TYPES = tuple(_REQUIRED_KEYS)
TORCH_SIMD_LANES = 16  # float32 lanes of torch's CPU vector kernels with AVX-512

_F = np.float32


def _fma(a, b, c) -> np.ndarray:
  """a * b + c with a single float32 rounding, like the FMA instruction.

  The float32 product is exact in float64; the float64 sum is made exact with
  TwoSum's error term and rounded to odd, so the final rounding to float32 is the
  only one (round-to-odd at 53 bits is safe for a later rounding to 24 bits).
  """
  p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
  c = np.asarray(c, np.float64)
  s = p + c
  v = s - p
  err = (p - (s - v)) + (c - v)
  bits = s.view(np.int64)
  inexact_even = (err != 0) & ((bits & 1) == 0)
  toward = np.where((err > 0) == (s > 0), 1, -1)
  s = np.where(inexact_even, (bits + toward).view(np.float64), s)
  return s.astype(_F)


# Double-float (unevaluated sum hi + lo of two float32) helpers, named after SLEEF's.
def _add2_ff(x, y):
  s = x + y
  v = s - x
  return s, (x - (s - v)) + (y - v)


def _add_df_df(x, y):  # assumes |x| >= |y|
  s = x[0] + y[0]
  return s, (((x[0] - s) + y[0]) + x[1]) + y[1]


def _add2_df_df(x, y):
  s = x[0] + y[0]
  v = s - x[0]
  t = (x[0] - (s - v)) + (y[0] - v)
  return s, t + (x[1] + y[1])


def _add2_df_f(x, y):
  s = x[0] + y
  v = s - x[0]
  t = (x[0] - (s - v)) + (y - v)
  return s, t + x[1]


def _add_f_df(x, y):  # assumes |x| >= |y|
  s = x + y[0]
  return s, ((x - s) + y[0]) + y[1]


def _mul_df_f(x, y):
  s = x[0] * y
  return s, _fma(x[1], y, _fma(x[0], y, -s))


def _mul_df_df(x, y):
  s = x[0] * y[0]
  return s, _fma(x[0], y[1], _fma(x[1], y[0], _fma(x[0], y[0], -s)))


def _squ_df(x):
  s = x[0] * x[0]
  return s, _fma(x[0] + x[0], x[1], _fma(x[0], x[0], -s))


def _div_df_df(n, d):
  t = _F(1) / d[0]
  s = n[0] * t
  u = _fma(t, n[0], -s)
  v = _fma(-d[1], t, _fma(-d[0], t, _F(1)))
  return s, _fma(s, v, _fma(n[1], t, u))


def _sleef_log(d: np.ndarray):
  """Natural log of positive normal floats as a double-float (SLEEF `logkf`)."""
  e = (np.frexp(d * _F(1.0 / 0.75))[1] - 1).astype(_F)  # vgetexp: floor(log2(.)), exactly
  # vgetmant(d, [0.75, 1.5)): the significand scaled into [0.75, 1.5), exactly.
  mant = np.frexp(d)[0]  # in [0.5, 1)
  m = np.where(mant >= 0.75, mant, mant * 2).astype(_F)
  x = _div_df_df(_add2_ff(_F(-1), m), _add2_ff(_F(1), m))
  x2 = _squ_df(x)
  t = _fma(_F(0.240320354700088500976562), x2[0], _F(0.285112679004669189453125))
  t = _fma(t, x2[0], _F(0.400007992982864379882812))
  c = (_F(0.66666662693023681640625), _F(3.69183861259614332084311e-09))
  s = _mul_df_f((_F(0.69314718246459960938), _F(-1.904654323148236017e-09)), e)
  s = _add_df_df(s, (x[0] * _F(2), x[1] * _F(2)))
  return _add_df_df(s, _mul_df_df(_mul_df_df(x2, x), _add2_df_df(_mul_df_f(x2, t), c)))


def _sleef_exp(d) -> np.ndarray:
  """exp of a double-float argument, rounded to float32 (SLEEF `expkf`)."""
  q = np.rint((d[0] + d[1]) * _F(1.442695040888963407359924681001892137426645954152985934135))
  qf = q.astype(_F)
  s = _add2_df_f(d, qf * _F(-0.693145751953125))
  s = _add2_df_f(s, qf * _F(-1.428606765330187045e-06))
  hi = s[0] + s[1]
  s = (hi, (s[0] - hi) + s[1])
  u = _F(0.00136324646882712841033936)
  for coef in (0.00836596917361021041870117, 0.0416710823774337768554688,
               0.166665524244308471679688, 0.499999850988388061523438):
    u = _fma(u, s[0], _F(coef))
  t = _add_df_df(s, _mul_df_f(_squ_df(s), u))
  t = _add_f_df(_F(1), t)
  return np.ldexp(t[0] + t[1], q.astype(np.int32)).astype(_F)


def scaling_problem(rope_scaling: Mapping[str, Any]) -> str:
  """'' when `rope_scaling` is usable, else what is wrong, in one line.

  E.g. {"rope_type": "llama3", "factor": 8.0} -> "rope_type 'llama3' needs keys
  ['high_freq_factor', 'low_freq_factor', 'original_max_position_embeddings'], missing
  ['high_freq_factor', 'low_freq_factor', 'original_max_position_embeddings']".
  """
  rope_type = rope_scaling.get("rope_type", "default")
  if rope_type not in _REQUIRED_KEYS:
    return f"rope_type {rope_type!r} is not supported; supported: {ROPE_TYPES}"
  missing = sorted(k for k in _REQUIRED_KEYS[rope_type] if rope_scaling.get(k) is None)
  if missing:
    return (f"rope_type {rope_type!r} needs keys {sorted(_REQUIRED_KEYS[rope_type])}, "
            f"missing {missing}")
  return ""


def torch_powf(base: float, exponents: np.ndarray, lanes: int = TORCH_SIMD_LANES) -> np.ndarray:
  """float32 `base ** exponents` as torch computes it on a CPU with `lanes` float lanes.

  E.g. torch_powf(10000.0, np.float32([0, 0.5])) -> float32([1., 100.]); the
  first len - len % (2 * lanes) elements go through SLEEF's powf_u10, the rest
  through libm, as in torch's vectorized loop (lanes=1: libm for all, as torch
  without vector kernels). Requires base > 0 and finite, exponents finite with
  base ** exponents a normal float32.
  """
  exponents = np.asarray(exponents, _F)
  base32 = np.full(exponents.shape, base, _F)
  if not (np.isfinite(base32).all() and (base32 > 0).all() and np.isfinite(exponents).all()):
    raise ValueError(f"torch_powf: needs a positive finite base and finite exponents, got "
                     f"base {base!r}")
  with np.errstate(over="ignore", under="ignore"):
    libm = (base32.astype(np.float64) ** exponents.astype(np.float64)).astype(_F)
    simd = _sleef_exp(_mul_df_f(_sleef_log(base32), exponents))
  simd = np.where((exponents == 0) | (base32 == 1), _F(1), simd)
  body = exponents.size - exponents.size % (2 * lanes) if lanes > 1 else 0
  return np.concatenate([simd[:body], libm[body:]]).astype(_F)


def _recip(x: np.ndarray) -> np.ndarray:
  """torch's `scalar / tensor` starts with `tensor.reciprocal()`: 1 / x in float32."""
  return (_F(1) / x).astype(_F)


def default_inv_freq(head_dim: int, base: float, lanes: int = TORCH_SIMD_LANES) -> np.ndarray:
  """1 / base ** (arange(0, d, 2) / d), float32 as transformers' default RoPE.

  E.g. default_inv_freq(4, 10000.0) -> float32([1., 0.01]).
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(_F) / _F(head_dim)
  return _recip(torch_powf(base, exponents, lanes))


def inverse_frequencies(head_dim: int, rope_theta: float, rope_scaling: Mapping[str, Any],
                        max_position_embeddings: int,
                        lanes: int = TORCH_SIMD_LANES) -> tuple[np.ndarray, float]:
  """(inv_freq (head_dim // 2,) float32, cos/sin multiplier) of transformers' RoPE types.

  rope_scaling: {} or {"rope_type": "default"}; {"rope_type": "linear", "factor"};
  {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
  "original_max_position_embeddings"}; {"rope_type": "yarn", "factor" (None: taken from
  max_position_embeddings), "original_max_position_embeddings", optional "attention_factor",
  "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"}.
  E.g. (4, 10000.0, {"rope_type": "linear", "factor": 2.0}, 2048) ->
  (float32([0.5, 0.005]), 1.0).
  """
  params = dict(rope_scaling)
  problem = scaling_problem(params)
  if problem:
    raise ValueError(f"RoPE scaling {params}: {problem}")
  rope_type = params.get("rope_type", "default")
  dim, base = head_dim, float(rope_theta)
  inv_freq = default_inv_freq(dim, base, lanes)
  if rope_type == "default":
    return inv_freq, 1.0
  if rope_type == "linear":
    return (inv_freq / _F(params["factor"])).astype(_F), 1.0
  if rope_type == "llama3":
    return _llama3(inv_freq, params), 1.0
  return _yarn(dim, base, params, max_position_embeddings, lanes)


def _llama3(inv_freq: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
  """Llama 3.1 band-wise scaling: long wavelengths / factor, short kept, smooth between."""
  factor = params["factor"]
  low, high = params["low_freq_factor"], params["high_freq_factor"]
  old_len = params["original_max_position_embeddings"]
  low_wavelen, high_wavelen = old_len / low, old_len / high  # Python floats, as in HF
  wavelen = (_recip(inv_freq) * _F(2 * math.pi)).astype(_F)
  scaled = np.where(wavelen > _F(low_wavelen), inv_freq / _F(factor), inv_freq).astype(_F)
  smooth = ((_recip(wavelen) * _F(old_len)).astype(_F) - _F(low)) / _F(high - low)
  smoothed = ((_F(1) - smooth) * scaled / _F(factor) + smooth * scaled).astype(_F)
  medium = ~(wavelen < _F(high_wavelen)) & ~(wavelen > _F(low_wavelen))
  return np.where(medium, smoothed, scaled).astype(_F)


def _yarn(dim: int, base: float, params: Mapping[str, Any], max_position_embeddings: int,
          lanes: int) -> tuple[np.ndarray, float]:
  """YaRN (NTK-by-parts): interpolated low frequencies, an attention factor on cos/sin."""
  old_len = params["original_max_position_embeddings"]
  factor = params.get("factor")
  if factor is None:
    factor = max_position_embeddings / old_len
  attention_factor = params.get("attention_factor")
  if attention_factor is None:
    mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(scale, m=1):
      return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = (float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all))
                        if mscale and mscale_all else get_mscale(factor))
  beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

  def correction_dim(rotations):
    return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

  lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
  if params.get("truncate", True):
    lo, hi = math.floor(lo), math.ceil(hi)
  lo, hi = max(lo, 0), min(hi, dim - 1)
  if lo == hi:
    hi += 0.001  # HF's guard against a zero-width ramp
  ramp = np.clip((np.arange(dim // 2, dtype=_F) - _F(lo)) / _F(hi - lo), 0, 1).astype(_F)
  extrapolation = (_F(1) - ramp).astype(_F)
  pos_freqs = torch_powf(base, np.arange(0, dim, 2, dtype=np.int64).astype(_F) / _F(dim), lanes)
  interpolated = _recip((_F(factor) * pos_freqs).astype(_F))
  inv_freq = interpolated * (_F(1) - extrapolation) + _recip(pos_freqs) * extrapolation
  return inv_freq.astype(_F), float(attention_factor)
