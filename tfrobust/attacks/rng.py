"""Stateless random draws that are the same with and without XLA.

TensorFlow's stateless Philox generator produces the same 32-bit words in a plain graph and in an
XLA-compiled one (`StatelessRandomGetKeyCounter` and `StatelessRandomUniformFullIntV2` agree bit for
bit), but the two paths turn those words into floats differently: `tf.random.stateless_uniform(...,
alg="philox")` under `jit_compile=True` returns other numbers than without it, so an attack's random
start (and with it the whole training run) would depend on whether XLA is on. Here the words are drawn
with the full-range integer op and converted by hand:

    uniform in [0, 1): u = (w >> 8) * 2^-24            (the top 24 bits: every value exact in float32)
    normal:            z = sqrt(-2 ln(1 - u1)) * cos(2π u2)     (Box & Muller 1958)

so the uniform draws are bit-identical on both paths and the normal ones agree to the last bits of `log`
and `cos`. Seeds are int32/int64 tensors of shape [2], as for `tf.random.stateless_*`; the algorithm is
Philox explicitly ("auto_select" may choose another generator per device). `split` and `fold_in` derive
new seeds from the same words: `tf.random.experimental.stateless_split` and `stateless_fold_in` also
disagree between the two paths once a seed holds large int64 values (as the seeds they return do).

    from tfrobust.attacks import rng
    start = x + eps * rng.uniform(tf.shape(x), seed, -1.0, 1.0)
"""

from __future__ import annotations

import math

import tensorflow as tf

ALG = "philox"
_TWO_TO_MINUS_24 = 2.0**-24


def uniform_bits(shape, seed: tf.Tensor) -> tf.Tensor:
    """uint32 words of the Philox stream for `seed` (identical with and without XLA)."""
    return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg=ALG)


def split(seed: tf.Tensor, num: int = 2) -> tf.Tensor:
    """`num` new int64 [2] seeds (shape [num, 2]) from `seed`, as `stateless_split`, the same under XLA."""
    return tf.cast(uniform_bits([num, 2], seed), tf.int64)


def fold_in(seed: tf.Tensor, data) -> tf.Tensor:
    """A new int64 [2] seed from `seed` and an integer `data` (a step or run index), as `stateless_fold_in`."""
    words = tf.cast(uniform_bits([2], seed), tf.int64)
    mixed = tf.bitwise.bitwise_xor(words[1], tf.cast(data, tf.int64))
    return tf.cast(uniform_bits([2], tf.stack([words[0], mixed])), tf.int64)


def _unit(shape, seed: tf.Tensor) -> tf.Tensor:
    """float32 in [0, 1), multiples of 2^-24."""
    words = tf.bitwise.right_shift(uniform_bits(shape, seed), tf.constant(8, tf.uint32))
    return tf.cast(tf.cast(words, tf.int32), tf.float32) * _TWO_TO_MINUS_24


def uniform(shape, seed: tf.Tensor, minval: float = 0.0, maxval: float = 1.0, dtype=tf.float32) -> tf.Tensor:
    """Uniform in [minval, maxval), as `tf.random.stateless_uniform` but the same under XLA."""
    u = _unit(shape, seed)
    if (minval, maxval) != (0.0, 1.0):
        u = minval + (maxval - minval) * u
    return tf.cast(u, dtype)


def normal(shape, seed: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """Standard normal by Box-Muller from two independent uniform streams of `seed`."""
    first, second = tf.unstack(split(seed, 2))
    u1 = 1.0 - _unit(shape, first)  # in (0, 1]: the logarithm stays finite
    u2 = _unit(shape, second)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos((2.0 * math.pi) * u2)
    return tf.cast(z, dtype)
