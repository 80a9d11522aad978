"""A real torch.save checkpoint, mutated (its pickle's numbers and opcodes, its zip headers), is
either read exactly as torch.load(weights_only=True) reads it, or refused in one line; in
either case the reader's memory stays within a bound derived from the file's size."""

import collections
import io
import os
import pickle
import pickletools
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from keras_resnet.convert.formats import read_state_dict, unwrap_state_dict

EVERYDAY_CASES = 200
SLOW_CASES = 3000
# The reader inflates and materializes at most a few times the file's size (storages as read,
# then widened, and the tensors copied out of them), plus Python's own objects.
MEMORY_PER_FILE_BYTE = 16
MEMORY_FLOOR = 16 * 2**20
INTERESTING_INTS = (-2**63, -2**31, -65536, -7, -1, 0, 1, 2, 3, 5, 64, 255, 65535, 2**31 - 1,
                    2**31, 2**32, 2**40, 2**62, 2**63 - 1)


def _checkpoint():
    import torch

    torch.manual_seed(0)
    shared = torch.arange(12, dtype=torch.float32)
    return {"model": collections.OrderedDict([
        ("conv.weight", torch.randn(4, 3, 3, 3)),
        ("bn.num_batches_tracked", torch.tensor(7)),
        ("half", torch.randn(2, 5).half()),
        ("bf16", torch.randn(3, 2).bfloat16()),
        ("transposed", torch.randn(3, 4).t()),
        ("slice", shared[3:9].view(2, 3)),
        ("whole", shared),
        ("mask", torch.tensor([True, False, True])),
        ("param", torch.nn.Parameter(torch.ones(2))),
    ]), "epoch": 3}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("fuzz") / "original.pth"
    torch.save(_checkpoint(), path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    return path.read_bytes(), entries


def _rezip(entries, replace=None, extra=()) -> bytes:
    """The archive again, an entry's bytes replaced, extra (name, bytes) entries appended."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if replace and info.filename.endswith(replace[0]):
                data = replace[1]
            archive.writestr(info.filename, data)
        for name, data in extra:
            with pytest.warns(UserWarning, match="Duplicate name"):
                archive.writestr(name, data)
    return out.getvalue()


def _mutate_pickle(rng, pkl: bytes) -> bytes:
    ops = list(pickletools.genops(pkl))
    ints = [(op, pos) for op, _, pos in ops
            if op.name in ("BININT", "BININT1", "BININT2", "LONG1")]
    choice = rng.integers(6)
    if choice <= 2 and ints:  # a number (offset, size, stride, numel) to an interesting one
        op, pos = ints[rng.integers(len(ints))]
        value = int(rng.choice(INTERESTING_INTS))
        body = pickle.encode_long(value)
        head = pkl[:pos] + bytes([0x8a, len(body)]) + body  # LONG1
        width = {"BININT": 4, "BININT1": 1, "BININT2": 2, "LONG1": 1 + pkl[pos + 1]}[op.name]
        return head + pkl[pos + 1 + width:]
    data = bytearray(pkl)
    if choice == 3:  # random bytes
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(len(data))] = rng.integers(256)
    elif choice == 4:  # an opcode repeated or dropped
        _, _, pos = ops[rng.integers(len(ops))]
        data = data[:pos] + data[pos:pos + 1] + data[pos:] if rng.integers(2) else \
            data[:pos] + data[pos + 1:]
    else:  # cut short
        data = data[:rng.integers(len(data))]
    return bytes(data)


def _mutate_headers(rng, raw: bytes, entries) -> bytes:
    choice = rng.integers(4)
    data = bytearray(raw)
    if choice == 0:  # a size field of a local or central header
        sig = (b"PK\x03\x04", b"PK\x01\x02")[rng.integers(2)]
        starts = [i for i in range(len(raw) - 4) if raw[i:i + 4] == sig]
        start = starts[rng.integers(len(starts))]
        field = start + (rng.choice([18, 22]) if sig == b"PK\x03\x04" else rng.choice([20, 24]))
        struct.pack_into("<I", data, field, int(rng.choice([0, 1, 2**20, 2**31, 2**32 - 1])))
        return bytes(data)
    if choice == 1:  # a second entry of the same name, first or last
        info, _ = entries[rng.integers(len(entries))]
        return _rezip(entries, extra=[(info.filename, os.urandom(int(rng.integers(1, 64))))])
    if choice == 2:  # a storage's bytes shortened or lengthened
        names = [info.filename for info, _ in entries if "/data/" in info.filename]
        name = names[rng.integers(len(names))]
        body = dict((i.filename, d) for i, d in entries)[name]
        body = body[:len(body) // 2] if rng.integers(2) else body + body
        return _rezip(entries, replace=(name, body))
    for _ in range(rng.integers(1, 6)):  # random header bytes
        data[rng.integers(len(data))] = rng.integers(256)
    return bytes(data)


def _same(ours: dict, theirs: dict) -> bool:
    return list(ours) == list(theirs) and all(
        ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
        and np.array_equal(ours[k], theirs[k], equal_nan=ours[k].dtype.kind == "f")
        for k in theirs)


def _run_cases(tmp_path, original, count: int, seed: int):
    import torch

    raw, entries = original
    pkl = dict((i.filename, d) for i, d in entries)
    pkl_name = next(n for n in pkl if n.endswith("data.pkl"))
    rng = np.random.default_rng(seed)
    original_sd = unwrap_state_dict(torch.load(io.BytesIO(raw), weights_only=True))[0]
    outcomes = collections.Counter()
    for case in range(count):
        if rng.integers(2):
            data = _rezip(entries, replace=(pkl_name, _mutate_pickle(rng, pkl[pkl_name])))
        else:
            data = _mutate_headers(rng, raw, entries)
        path = tmp_path / f"case{case}.pth"
        path.write_bytes(data)
        bound = MEMORY_PER_FILE_BYTE * len(data) + MEMORY_FLOOR
        tracemalloc.start()
        try:
            ours, error = read_state_dict(path)[0], None
        except (ValueError, ImportError) as err:
            ours, error = None, err
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak <= bound, f"case {case}: {peak} bytes for a {len(data)}-byte file"
        if error is not None:
            assert "\n" not in str(error), f"case {case}: {error}"
            outcomes["refused"] += 1
            path.unlink()
            continue
        try:
            theirs = unwrap_state_dict(torch.load(path, map_location="cpu",
                                                  weights_only=True))[0]
        except Exception:  # noqa: BLE001  torch refused it: only the original's data will do
            theirs = original_sd
        # torch's zip reader (miniz) trips over damage in fields that hold no data (padding,
        # data descriptors, extra-field lengths), refusing the file or even reading other
        # bytes; zipfile reads the entries as the central directory has them. Either way the
        # reader must give what torch gives or the original's data, never other bytes.
        assert _same(ours, theirs) or _same(ours, original_sd), f"case {case}: read differently"
        outcomes["same"] += 1
        path.unlink()
    # Mutations that keep the file valid and those that break it both happen.
    assert outcomes["refused"] > count // 10 and outcomes["same"] > 0, outcomes


def test_mutated_checkpoints_load_as_torch_does_or_are_refused(tmp_path, original):
    _run_cases(tmp_path, original, EVERYDAY_CASES, seed=0)


@pytest.mark.slow
def test_many_mutated_checkpoints(tmp_path, original):
    _run_cases(tmp_path, original, SLOW_CASES, seed=1)
