"""Image files from anywhere: sizes read from the header and refused before decoding, special
files (FIFOs, devices) never opened, any file name read."""

import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.training.test_folders import write_images
from training import preprocessing
from training.data import folder as folders
from training.preprocessing import ImageError, Preprocessing

PREP = Preprocessing(8, 8, 3, "stretch")
NOT_UTF8 = b"caf\xe9.png"  # Latin-1: a name Linux keeps as bytes


def bomb_png(path, width=23000, height=23000):
    """A PNG of a few hundred bytes whose header declares width x height RGB pixels."""
    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                      8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any decode fails the test: what is refused is refused from its header."""
    def decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(preprocessing, "decode", decode)


def finishes(fn, fifos, seconds=60):
    """fn()'s result, or a failure if it is still running after `seconds` (a reader blocked on
    a FIFO is let go by opening its write end)."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        pytest.fail(f"still running after {seconds} s: a FIFO was opened")
    return out["result"]


def test_load_image_refuses_a_huge_header_before_decoding(tmp_path, no_decoding):
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError) as e:
        preprocessing.load_image(str(path), PREP)
    message = str(e.value)
    assert "23000x23000" in message and str(preprocessing.DEFAULT_MAX_IMAGE_PIXELS) in message
    assert "KERAS_RESNET_MAX_IMAGE_PIXELS" in message and "\n" not in message


def test_the_pixel_limit_counts_frames_and_is_set_by_the_environment(tmp_path, monkeypatch):
    write_images(tmp_path, 1, size=(20, 30))  # 600 pixels
    png = str(tmp_path / "img000.png")
    frames = [Image.fromarray(np.full((10, 10), i, np.uint8)) for i in range(5)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    monkeypatch.setenv("KERAS_RESNET_MAX_IMAGE_PIXELS", "499")
    for path in (png, str(tmp_path / "anim.gif")):
        with pytest.raises(ImageError, match="more than the limit of 499 pixels"):
            preprocessing.load_image(path, PREP)
    monkeypatch.setenv("KERAS_RESNET_MAX_IMAGE_PIXELS", "600")
    assert preprocessing.load_image(png, PREP).shape == (8, 8, 3)
    monkeypatch.setenv("KERAS_RESNET_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match="KERAS_RESNET_MAX_IMAGE_PIXELS='lots' is not a posit"):
        preprocessing.load_image(png, PREP)


def test_folder_check_skips_images_over_the_pixel_limit(tmp_path, monkeypatch):
    for name in ("a", "b"):
        write_images(tmp_path / name, 10, size=(8, 8))
    write_images(tmp_path / "big", 1, size=(40, 40))
    os.replace(tmp_path / "big" / "img000.png", tmp_path / "b" / "big.png")
    os.rmdir(tmp_path / "big")
    monkeypatch.setenv("KERAS_RESNET_MAX_IMAGE_PIXELS", "1000")
    lines = []
    data = folders.check(folders.scan(str(tmp_path)), PREP, log=lines.append)
    assert [p for p, _ in data.skipped] == [os.path.join("b", "big.png")]
    assert "40x40 = 1600 pixels, more than the limit of 1000" in data.skipped[0][1]
    assert any("skipped b/big.png: too large" in line for line in lines)
    assert sum(len(v) for v in data.files.values()) == 20


def test_a_fifo_in_a_folder_is_skipped_unopened_and_training_reads_the_rest(tmp_path):
    from training import data as datasets

    for name in ("a", "b"):
        write_images(tmp_path / name, 10, size=(8, 8))
    fifo = str(tmp_path / "a" / "fifo.png")
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "b" / "link.png")  # followed to what it names
    data = finishes(lambda: folders.check(folders.scan(str(tmp_path)), PREP,
                                          log=lambda m: None), [fifo])
    assert sorted(data.skipped) == [(os.path.join("a", "fifo.png"), "not a regular file (a FIFO)"),
                                    (os.path.join("b", "link.png"), "not a regular file (a FIFO)")]
    pipes = finishes(lambda: datasets.load_pipelines(
        "folder", batch_size=4, epochs=1, data_dir=str(tmp_path), image_shape=(8, 8, 3),
        val_fraction=0.0), [fifo])
    seen = finishes(lambda: sum(int(x.shape[0]) for x, _ in pipes.train), [fifo])
    assert pipes.num_train + pipes.num_test == 20 and seen == pipes.num_train


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    from training import data as datasets

    for name in ("a", "b"):
        write_images(tmp_path / name, 10, size=(8, 8))
    os.replace(tmp_path / "a" / "img000.png", os.path.join(os.fsencode(tmp_path / "a"), NOT_UTF8))
    odd = os.fsdecode(os.path.join(b"a", NOT_UTF8))
    data = folders.check(folders.scan(str(tmp_path)), PREP, log=lambda m: None)
    assert not data.skipped and odd in [p for v in data.files.values() for p, _ in v]
    pipes = datasets.load_pipelines("folder", batch_size=32, epochs=1, data_dir=str(tmp_path),
                                    image_shape=(8, 8, 3), val_fraction=0.0, augment=False)
    assert pipes.num_train + pipes.num_test == 20
    assert sum(int(x.shape[0]) for x, _ in pipes.train) == pipes.num_train
    assert sum(int(x.shape[0]) for x, _ in pipes.test) == pipes.num_test


def test_a_class_folder_name_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    write_images(tmp_path / "a", 3, size=(8, 8))
    os.rename(tmp_path / "a", os.path.join(os.fsencode(tmp_path), b"caf\xe9"))
    write_images(tmp_path / "b", 3, size=(8, 8))
    with pytest.raises(folders.FolderError) as e:
        folders.scan(str(tmp_path))
    assert "caf\\udce9" in str(e.value) and "not valid UTF-8" in str(e.value)
