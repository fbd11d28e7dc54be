"""xor32 content-defined chunking: the cvmfs unit-test vector, a plain transcription of §6, and edge cases."""

import io
import random
from pathlib import Path

import numpy as np
import pytest

from cvmfs_pilot.publish.chunking import (
    DEFAULT_AVERAGE,
    DEFAULT_MAXIMUM,
    DEFAULT_MINIMUM,
    ChunkSizes,
    cut_points,
    iter_chunks,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_CUTS = PROJECT_ROOT / ".." / "shared" / "fixtures" / "xor32" / "expected_cuts.txt"

VECTOR_SIZES = ChunkSizes(512000, 1024000, 2048000)
VECTOR_LENGTH = 100 * 1024 * 1024
LCG_SEED = 42
LCG_MULTIPLIER = 6364136223846793005
LCG_INCREMENT = 1442695040888963407

SMALL = ChunkSizes(64, 128, 256)


def lcg_bytes(seed, count, block=1 << 20):
    """The bytes of the cvmfs test ``Prng``: ``s = s*A + C mod 2^64`` then ``uint64((double)s * 256 / 2^64) % 256``.

    Vectorised by jumping ahead: ``block`` states follow any state ``s`` as ``multipliers * s + increments``."""
    multipliers = np.array([LCG_MULTIPLIER], np.uint64)  # A^(k+1)
    increments = np.array([LCG_INCREMENT], np.uint64)  # C * (A^(k+1) - 1) / (A - 1)
    while len(multipliers) < block:  # k+L steps = k steps after L steps
        multipliers, increments = (
            np.concatenate((multipliers, multipliers * multipliers[-1])),
            np.concatenate((increments, multipliers * increments[-1] + increments)),
        )
    out = np.empty(count, np.uint8)
    state = np.uint64(seed)
    for lo in range(0, count, block):
        n = min(block, count - lo)
        states = multipliers[:n] * state + increments[:n]
        state = states[-1]
        out[lo : lo + n] = lcg_states_to_bytes(states)
    return out.tobytes()


def lcg_states_to_bytes(states):
    # astype rounds to nearest as C's (double) does; a state close to 2^64 becomes 2^64, the product 256.0, byte 0
    return (states.astype(np.float64) * 256.0 / 2.0**64).astype(np.uint64) % 256


def int32(value):
    return (value + 2**31) % 2**32 - 2**31


def reference_cut_points(data, sizes):
    """§6 step by step, in C's 32-bit signed arithmetic."""
    threshold = 0xFFFFFFFF // sizes.average
    cuts, start = [], 0
    while True:
        x = 0
        for byte in data[start + sizes.minimum - 32 : start + sizes.minimum]:
            x = ((x << 1) ^ byte) & 0xFFFFFFFF
        cut = None
        for i in range(start + sizes.minimum, min(start + sizes.maximum, len(data))):
            x = ((x << 1) ^ data[i]) & 0xFFFFFFFF
            if int32(abs(int32(int32(x) - 0x7FFFFFFF))) < threshold:
                cut = i
                break
        if cut is None:
            if start + sizes.maximum >= len(data):
                return cuts
            cut = start + sizes.maximum
        cuts.append(cut)
        start = cut


def chunks_of(data, sizes, block):
    return list(iter_chunks(io.BytesIO(data), sizes, block=block))


def random_data(seed, length, biased):
    """Uniform bytes, or long runs of 0xFF and 0x00 between random bytes: they rarely pass the test, so force hard
    cuts."""
    rng = random.Random(seed)
    if not biased:
        return rng.randbytes(length)
    return bytes(rng.choices([0x00, 0xFF, rng.randrange(256)], weights=[1, 30, 1])[0] for _ in range(length))


@pytest.fixture(scope="module")
def vector():
    return lcg_bytes(LCG_SEED, VECTOR_LENGTH)


@pytest.fixture(scope="module")
def expected_cuts():
    cuts = [int(line) for line in EXPECTED_CUTS.read_text().split()]
    assert len(cuts) == 104 and cuts[0] != 0
    return cuts


def test_lcg_states_convert_as_c_does():
    states = np.array([0, 2**56 - 1, 2**56 - 2**3, 2**63 + 2**62, 2**64 - 2**11, 2**64 - 1], np.uint64)
    # 2^56 - 1 has 56 significant bits and rounds up to 2^56, 2^56 - 8 has 53 and is exact; 2^64 - 1 rounds to 2^64
    assert lcg_states_to_bytes(states).tolist() == [0, 1, 0, 192, 255, 0]


def test_xor32_vector_whole_buffer(vector, expected_cuts):
    assert cut_points(vector, VECTOR_SIZES) == expected_cuts


def test_xor32_vector_streamed(vector, expected_cuts):
    chunks = chunks_of(vector, VECTOR_SIZES, 3 * 1024 * 1024)
    assert [offset for offset, _ in chunks] == [0] + expected_cuts
    assert b"".join(data for _, data in chunks) == vector


@pytest.mark.parametrize("sizes", [SMALL, ChunkSizes(32, 33, 34), ChunkSizes(100, 1000, 3000)])
@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_reference(seed, biased, sizes):
    data = random_data(seed, 20000 + 997 * seed, biased)
    expected = reference_cut_points(data, sizes)
    assert len(expected) > 3
    assert cut_points(data, sizes) == expected
    assert cut_points(memoryview(data), sizes) == expected


@pytest.mark.parametrize("block", [1, 7, 31, 32, 255, 4096])
@pytest.mark.parametrize("biased", [False, True])
def test_streamed_chunks_match_cut_points(block, biased):
    data = random_data(block, 30000, biased)
    chunks = chunks_of(data, SMALL, block)
    assert [offset for offset, _ in chunks] == [0] + cut_points(data, SMALL)
    assert b"".join(piece for _, piece in chunks) == data


def test_int_min_value_cuts():
    # x = XOR of byte[i-k] << k: 0xFF at k = 0 and 0x80 at k = 1..24 set all 32 bits, with the window's last byte
    # at minimum (earlier positions are not tested). int32 -1 minus 0x7FFFFFFF is INT_MIN, abs(INT_MIN) < threshold
    data = bytes(SMALL.minimum - 24) + b"\x80" * 24 + b"\xff" + bytes(100)
    x = 0
    for byte in data[: SMALL.minimum + 1]:
        x = ((x << 1) ^ byte) & 0xFFFFFFFF
    assert x == 0xFFFFFFFF
    assert reference_cut_points(data, SMALL) == [SMALL.minimum]
    assert cut_points(data, SMALL) == [SMALL.minimum]


def test_empty_input():
    assert cut_points(b"", SMALL) == []
    assert chunks_of(b"", SMALL, 16) == []


@pytest.mark.parametrize("length", [1, SMALL.minimum - 1, SMALL.minimum])
def test_input_up_to_minimum_is_one_piece(length):
    data = random_data(length, length, biased=True)
    assert cut_points(data, SMALL) == []
    assert chunks_of(data, SMALL, 16) == [(0, data)]


def test_hard_cuts_at_maximum():
    # zero bytes keep x = 0, which never passes the test
    assert cut_points(bytes(SMALL.maximum), SMALL) == []
    assert chunks_of(bytes(SMALL.maximum), SMALL, 100) == [(0, bytes(SMALL.maximum))]
    assert cut_points(bytes(SMALL.maximum + 1), SMALL) == [SMALL.maximum]
    assert cut_points(bytes(2 * SMALL.maximum), SMALL) == [SMALL.maximum]
    assert chunks_of(bytes(2 * SMALL.maximum + 1), SMALL, 100) == [
        (0, bytes(SMALL.maximum)),
        (SMALL.maximum, bytes(SMALL.maximum)),
        (2 * SMALL.maximum, b"\x00"),
    ]


def test_data_ending_at_a_cut():
    data = random_data(7, 5000, biased=False)
    cuts = cut_points(data, SMALL)
    content_cut = next(c for a, c in zip([0] + cuts, cuts) if c - a < SMALL.maximum)
    before = [c for c in cuts if c < content_cut]
    assert cut_points(data[:content_cut], SMALL) == before
    assert cut_points(data[: content_cut + 1], SMALL) == before + [content_cut]
    assert chunks_of(data[: content_cut + 1], SMALL, 64)[-1] == (content_cut, data[content_cut : content_cut + 1])


def test_default_sizes():
    assert ChunkSizes() == ChunkSizes(DEFAULT_MINIMUM, DEFAULT_AVERAGE, DEFAULT_MAXIMUM)
    assert (DEFAULT_MINIMUM, DEFAULT_AVERAGE, DEFAULT_MAXIMUM) == (4 << 20, 8 << 20, 16 << 20)


@pytest.mark.parametrize(
    "minimum, average, maximum", [(31, 64, 128), (64, 64, 128), (64, 128, 128), (64, 256, 128), (0, 1, 2)]
)
def test_invalid_sizes(minimum, average, maximum):
    with pytest.raises(ValueError, match="minimum < average < maximum"):
        ChunkSizes(minimum, average, maximum)


def test_invalid_block():
    with pytest.raises(ValueError, match="block"):
        chunks_of(b"data", SMALL, 0)
