"""RoPE equal to transformers' at long positions: inverse frequencies bit for bit, cos/sin
tables up to position 131,071, logits of tiny random models at positions beyond 20,000.

transformers runs in a torch-only child process (tests/hf_reference.py); one call builds
every table. The previous implementation (numpy's float32 power) is kept here as
`_numpy_pow_inv_freq` to show what the tests catch: its tables and logits drift with
position, ours do not.
"""
import fractions
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hf_reference  # noqa: E402
from symbol_tuning.checkpoints.hf import load_hf  # noqa: E402
from symbol_tuning.models import rope  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402
from symbol_tuning.models.decoder.config import DecoderConfig  # noqa: E402

MAX_POSITIONS = 131072
HEAD_SIZES = (64, 80, 96, 128, 256)
_LLAMA3 = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
# (family, rope_theta, rope scaling) as the Hub's configs give them.
ROPES = {
    "llama3.1": ("llama", 500000.0, dict(_LLAMA3, factor=8.0)),
    "llama3.2": ("llama", 500000.0, dict(_LLAMA3, factor=32.0)),
    "linear": ("llama", 10000.0, {"rope_type": "linear", "factor": 4.0}),
    "qwen2.5-yarn": ("qwen2", 1000000.0, {"rope_type": "yarn", "factor": 4.0,
                                          "original_max_position_embeddings": 32768}),
    "qwen2.5": ("qwen2", 1000000.0, {}),
    "qwen3": ("qwen3", 1000000.0, {}),
    "gemma": ("gemma", 10000.0, {}),
}
CASES = {f"{name}/{head}": (*rope_args, head) for name, rope_args in ROPES.items()
         for head in HEAD_SIZES}
# Around 1k, 20k, 64k and the last position of a 131,072-token context.
POSITIONS = np.array([[0, 1, 1023, 1024, 1025, 19999, 20000, 20001, 32767, 65535, 65536,
                       65537, 100003, 131000, 131070, 131071]], np.int32)
# cos/sin from the same float32 angles still differ by the two libraries' cos/sin
# (SLEEF's in torch, XLA's here): a rounding or two of values <= 1.
TABLE_TOLERANCE = 2.5e-7


def _hf_config(family, theta, scaling, head):
  return {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": head, "max_position_embeddings": MAX_POSITIONS,
          "rope_parameters": {"rope_theta": theta, "rope_type": "default", **scaling}}


def _numpy_pow_inv_freq(head, theta):
  """The previous implementation's default branch: numpy's float32 power."""
  return (1.0 / (theta ** (np.arange(0, head, 2, dtype=np.float32) / np.float32(head)))
          ).astype(np.float32)


_MODEL = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
# One model per family, with the head sizes and RoPE the issue saw drift (Qwen3, Gemma).
MODELS = {"llama": ("llama3.1", 64), "qwen2": ("qwen2.5-yarn", 128), "qwen3": ("qwen3", 128),
          "gemma": ("gemma", 256)}
# Row 0 runs at positions 20,000.., row 1 at the end of a 131,072-token context.
LONG_POSITIONS = np.array([np.arange(20000, 20012), np.arange(131060, 131072)], np.int32)
LOGIT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hf_outputs(tmp_path_factory):
  """transformers' tables for CASES and, for MODELS, tiny random models saved under a
  temporary folder with their logits at LONG_POSITIONS (also with the numpy-pow table)."""
  tmp = tmp_path_factory.mktemp("rope_models")
  tokens = np.random.default_rng(0).integers(0, _MODEL["vocab_size"], size=LONG_POSITIONS.shape)
  arrays = {"table_positions": POSITIONS, "tokens": tokens.astype(np.int32),
            "positions": LONG_POSITIONS}
  cases = [{"name": name, "model_type": family,
            "config": _hf_config(family, theta, scaling, head)}
           for name, (family, theta, scaling, head) in CASES.items()]
  make, reload = [], []  # models are saved by the first jobs, reloaded by the others
  for family, (rope_name, head) in MODELS.items():
    _, theta, scaling = ROPES[rope_name]
    config = dict(_MODEL, **_hf_config(family, theta, scaling, head),
                  **({"hidden_act": "gelu_pytorch_tanh"} if family == "gemma" else {}))
    make.append({"name": family, "dir": str(tmp / family), "model_type": family,
                 "config": config})
    reload.append({"name": f"{family}-numpy-pow", "dir": str(tmp / family)})
    arrays[f"{family}-numpy-pow/inv_freq"] = _numpy_pow_inv_freq(head, theta)
  out = hf_reference.run("hf_reference:rope_tables", arrays, cases=cases, jobs=make + reload)
  out.update({f"{family}/dir": tmp / family for family in MODELS}, tokens=tokens)
  return out


def test_inverse_frequencies_are_bit_equal_to_transformers(hf_outputs):
  lanes = int(hf_outputs["simd_lanes"][0])
  numpy_pow_differs = 0
  for name, (_, theta, scaling, head) in CASES.items():
    ours, _ = rope.inverse_frequencies(head, theta, scaling, MAX_POSITIONS, lanes=lanes)
    theirs = hf_outputs[f"{name}/inv_freq"]
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (head // 2,), name
    np.testing.assert_array_equal(ours, theirs, err_msg=name)
    if not scaling:
      numpy_pow_differs += int((_numpy_pow_inv_freq(head, theta) != theirs).sum())
  assert numpy_pow_differs > 0  # the bug the issue reports: numpy's pow is not torch's


def test_attention_factor_and_config_entry_point():
  cfg = DecoderConfig(family="qwen2", head_dim=128, d_model=64, num_heads=4, num_kv_heads=2,
                      rope_theta=1e6, max_position_embeddings=MAX_POSITIONS,
                      rope_scaling=ROPES["qwen2.5-yarn"][2])
  inv_freq, factor = decoder_network.rope_frequencies(cfg)
  assert factor == pytest.approx(0.1 * np.log(4.0) + 1.0)  # YaRN's mscale for factor 4
  np.testing.assert_array_equal(inv_freq, rope.inverse_frequencies(
      128, 1e6, ROPES["qwen2.5-yarn"][2], MAX_POSITIONS)[0])
  with pytest.raises(ValueError, match="rope_type 'dynamic' is not supported"):
    DecoderConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
  with pytest.raises(ValueError, match=r"DecoderConfig.rope_scaling: rope_type 'llama3' needs "
                     r"keys .*missing \['high_freq_factor', 'low_freq_factor'\]"):
    DecoderConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                "original_max_position_embeddings": 8192})
  with pytest.raises(ValueError, match="DecoderConfig.rope_theta must be a positive number, "
                     "got -1.0"):
    DecoderConfig(rope_theta=-1.0)
  # yarn without a factor takes max_position_embeddings / original_max_position_embeddings.
  implicit = rope.inverse_frequencies(64, 1e6, {"rope_type": "yarn",
                                                "original_max_position_embeddings": 32768},
                                      MAX_POSITIONS)
  explicit = rope.inverse_frequencies(64, 1e6, {"rope_type": "yarn", "factor": 4.0,
                                                "original_max_position_embeddings": 32768},
                                      MAX_POSITIONS)
  np.testing.assert_array_equal(implicit[0], explicit[0])
  assert implicit[1] == explicit[1]


_apply_rope = jax.jit(decoder_network.apply_rope, static_argnums=3)  # one compile per shape


def _our_tables(inv_freq, factor, positions):
  """cos, sin as the network applies them: apply_rope on [1, .., 1, 0, .., 0] gives
  [x1 cos - x2 sin, x2 cos + x1 sin] = [cos, sin] exactly."""
  half = inv_freq.shape[0]
  x = jnp.concatenate([jnp.ones((1, positions.shape[1], 1, half)),
                       jnp.zeros((1, positions.shape[1], 1, half))], axis=-1)
  out = np.asarray(_apply_rope(x, jnp.asarray(positions), inv_freq, factor))
  return out[0, :, 0, :half], out[0, :, 0, half:]


def test_cos_sin_tables_equal_transformers_up_to_position_131071(hf_outputs):
  lanes = int(hf_outputs["simd_lanes"][0])
  worst_old = 0.0
  for name, (_, theta, scaling, head) in CASES.items():
    inv_freq, factor = rope.inverse_frequencies(head, theta, scaling, MAX_POSITIONS, lanes=lanes)
    cos, sin = _our_tables(inv_freq, factor, POSITIONS)
    half = head // 2
    their_cos, their_sin = hf_outputs[f"{name}/cos"][0], hf_outputs[f"{name}/sin"][0]
    # HF's tables repeat the half (cat(freqs, freqs)); ours apply the same angles.
    np.testing.assert_array_equal(their_cos[:, :half], their_cos[:, half:])
    error = max(np.abs(cos - their_cos[:, :half]).max(), np.abs(sin - their_sin[:, half:]).max())
    assert error <= TABLE_TOLERANCE, (name, error)
    if not scaling:
      old_cos, _ = _our_tables(_numpy_pow_inv_freq(head, theta), 1.0, POSITIONS)
      worst_old = max(worst_old, float(np.abs(old_cos - their_cos[:, :half]).max()))
  assert worst_old > 100 * TABLE_TOLERANCE, worst_old  # what the old tables were off by


# -----------------------------------------------------------------------------
# Logits of tiny random models at positions beyond 20,000.
# -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_logits(hf_outputs):
  """{family: (our config, params, HF logits, HF logits with the numpy-pow table)}."""
  out = {}
  for family in MODELS:
    config, params = load_hf(str(hf_outputs[f"{family}/dir"]))
    out[family] = (config, params, hf_outputs[family],
                   hf_outputs[f"{family}-numpy-pow"])
  return out, hf_outputs["tokens"]


def _our_logits(config, params, tokens):
  model = decoder_network.DecoderOnlyTransformer(config)
  return np.asarray(model.apply({"params": params}, jnp.asarray(tokens),
                                decoder_positions=jnp.asarray(LONG_POSITIONS),
                                enable_dropout=False))


@pytest.mark.parametrize("family", sorted(MODELS))
def test_logits_equal_transformers_beyond_position_20000(long_logits, family, monkeypatch):
  """Within 1e-5, or twice the float32 noise floor where that is higher: the floor is the
  difference when both sides run on one identical table (the numpy-pow one, given to HF
  in place of its own), so it holds everything but the table (measured 5e-6 to 1e-5)."""
  models, tokens = long_logits
  config, params, reference, reference_numpy_pow = models[family]
  assert config.max_position_embeddings == MAX_POSITIONS
  error = np.abs(_our_logits(config, params, tokens) - reference).max()
  old = (_numpy_pow_inv_freq(config.head_dim, config.rope_theta),
         decoder_network.rope_frequencies(config)[1])
  monkeypatch.setattr(decoder_network, "rope_frequencies", lambda cfg, local=False: old)
  ours_numpy_pow = _our_logits(config, params, tokens)
  floor = np.abs(ours_numpy_pow - reference_numpy_pow).max()
  bound = max(LOGIT_TOLERANCE, 2 * floor)
  assert error <= bound, (family, error, floor)
  if not config.rope_scaling:  # default RoPE: the numpy-pow table was the old code's
    drift = np.abs(ours_numpy_pow - reference).max()
    assert drift > 10 * bound, (family, drift)  # the drift the issue reports


# -----------------------------------------------------------------------------
# The float32 FMA the SLEEF emulation rests on.
# -----------------------------------------------------------------------------
def _round_to_float32(exact: fractions.Fraction) -> np.float32:
  """Correctly rounded (ties to even) float32 of an exact rational."""
  guess = np.float32(float(exact))
  candidates = [guess, np.nextafter(guess, np.float32(np.inf)),
                np.nextafter(guess, np.float32(-np.inf))]
  return min(candidates, key=lambda f: (abs(fractions.Fraction(float(f)) - exact),
                                        int(np.array(f).view(np.int32)) & 1))


def test_fma_rounds_once():
  rng = np.random.default_rng(0)
  a = rng.standard_normal(3000).astype(np.float32)
  b = (rng.standard_normal(3000) * 1e-3).astype(np.float32)
  c = -(a * b).astype(np.float32) * np.float32(1 + 2 ** -20)  # heavy cancellation
  # 1 + 2^-11 + 2^-24 is a float32 midpoint; + 2^-80 puts the exact sum just above it,
  # where a float64 sum rounded again to float32 would go down (ties to even).
  a = np.append(a, np.float32(1 + 2 ** -12))
  b = np.append(b, np.float32(1 + 2 ** -12))
  c = np.append(c, np.float32(2 ** -80))
  got = rope._fma(a, b, c)  # pylint: disable=protected-access
  want = [_round_to_float32(fractions.Fraction(float(x)) * fractions.Fraction(float(y))
                            + fractions.Fraction(float(z))) for x, y, z in zip(a, b, c)]
  np.testing.assert_array_equal(got, np.array(want, np.float32))
  assert got[-1] == np.float32(1 + 2 ** -11 + 2 ** -23)
  naive = ((a[-1].astype(np.float64) * b[-1]) + c[-1]).astype(np.float32)
  assert naive != got[-1]
