"""Damaged PNG and JPEG files never crash a process (issue 24): each is named in one error (exit 2 at the CLI) or
decodes to its own pixels; good PNGs of every kind decode to the pixels torchvision's decoder gives them.

torchvision's libpng reader dies by a segmentation fault on a bad CRC or zlib stream (pytorch/vision#3613), so
the fuzzing runs in a subprocess: a crash fails the test and names the case instead of killing pytest.
"""

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image

from dlcvkit.data.images import read_image
from dlcvkit.errors import DlcvkitError
from tests.cli_runner import dlcvkit, dlcvkit_here
from tests.data.test_inputs import SEG


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png(samples: np.ndarray, colour: int, depth: int, palette=None, trns: bytes | None = None) -> bytes:
    """A PNG written by hand (PIL writes neither 16-bit colour nor 2/4-bit grey): `samples` `h w c` at `depth`."""
    h, w = samples.shape[:2]
    rows = []
    for row in samples.reshape(h, -1):
        if depth == 16:
            raw = row.astype(">u2").tobytes()
        elif depth == 8:
            raw = row.astype(np.uint8).tobytes()
        else:
            raw = np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth:].reshape(-1)).tobytes()
        rows.append(b"\0" + raw)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    if palette is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")


def png_kinds() -> dict[str, bytes]:
    """Every PNG colour type at every bit depth, palettes with and without transparency."""
    rs = np.random.RandomState(1)
    kinds = {}
    for colour, channels, depths in ((0, 1, (1, 2, 4, 8, 16)), (2, 3, (8, 16)), (4, 2, (8, 16)), (6, 4, (8, 16))):
        for depth in depths:
            kinds[f"colour{colour}_depth{depth}"] = make_png(rs.randint(0, 2 ** depth, (7, 9, channels)), colour, depth)
    for depth in (1, 2, 4, 8):
        n = 2 ** depth
        palette = rs.randint(0, 256, (n, 3))
        kinds[f"palette{depth}"] = make_png(rs.randint(0, n, (7, 9, 1)), 3, depth, palette)
        kinds[f"palette{depth}_trns"] = make_png(rs.randint(0, n, (7, 9, 1)), 3, depth, palette, bytes(range(n)))
    kinds["rgb_trns"] = make_png(rs.randint(0, 256, (7, 9, 3)), 2, 8, trns=b"\0\1\0\2\0\3")
    return kinds


def test_good_pngs_of_every_kind_decode_to_torchvision_pixels(tmp_path):
    for name, data in png_kinds().items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        grey_file = name.startswith(("colour0", "colour4"))
        for grey in (False, True):
            if grey and not grey_file:
                with pytest.raises(DlcvkitError, match=rf"cannot read image \S*{name}.png as grey: it is a colour PNG"):
                    read_image(path, grey=True)
                continue
            expected = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                    mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB)
            if expected.dtype == torch.uint16:
                expected = (expected.to(torch.int32) >> 8).to(torch.uint8)  # 16-bit: the high byte
            got = read_image(path, grey=grey)
            assert got.dtype == torch.uint8 and got.shape == expected.shape, name
            assert torch.equal(got, expected), f"{name} grey={grey}"


# Run in a subprocess (argv: a folder). Prints each case before decoding it, so that a crash names it, then one
# JSON line: the outcomes per file kind and the cases that broke the contract.
FUZZ = r"""
import io, json, struct, sys, zlib
from pathlib import Path
import numpy as np
from PIL import Image
from dlcvkit.data.images import read_image, read_resized
from dlcvkit.data.masks import read_mask, write_mask
from dlcvkit.errors import DlcvkitError
from tests.data.test_damaged_images import make_png

folder = Path(sys.argv[1])
rs = np.random.RandomState(0)
def pil(array, fmt, **kw):
    b = io.BytesIO(); Image.fromarray(array).save(b, fmt, **kw); return b.getvalue()
ids = rs.randint(0, 7, (6, 8))
write_mask(folder / "colour_mask.png", __import__("torch").from_numpy(ids).to(__import__("torch").uint8))
originals = {  # name -> (bytes, readers)
    "rgb.png": (pil(rs.randint(0, 256, (6, 8, 3), dtype=np.uint8), "PNG"), "image"),
    "grey_index_mask.png": (pil(ids.astype(np.uint8), "PNG"), "index"),
    "colour_mask.png": ((folder / "colour_mask.png").read_bytes(), "colour"),
    "palette_mask.png": (make_png(ids[..., None], 3, 8, [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0),
                                                         (0, 0, 255), (255, 255, 255), (0, 0, 0)]), "colour"),
    "grey16.png": (make_png(rs.randint(0, 65536, (6, 8, 1)), 0, 16), "image"),
    "rgba16.png": (make_png(rs.randint(0, 65536, (6, 8, 4)), 6, 16), "image"),
    "rgb.jpg": (pil(rs.randint(0, 256, (16, 16, 3), dtype=np.uint8), "JPEG", quality=90), "image"),
    "grey.jpg": (pil(rs.randint(0, 256, (16, 16), dtype=np.uint8), "JPEG", quality=90), "image"),
}

def read(path, how):
    if how == "image":
        return [read_image(path).numpy(), read_resized(path, 4).numpy()]
    return [read_mask(path, mask_format=how).numpy(), read_image(path).numpy()]

def damaged(data):
    for pos in range(len(data)):  # one byte at every position (every chunk's length, type, data and CRC)
        yield f"byte {pos} ^ 0xff", data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
    for end in range(1, len(data), max(1, len(data) // 12)):
        yield f"truncated to {end}", data[:end]
    if data[:4] == b"\x89PNG":  # damage that keeps the CRCs valid: a broken zlib stream, a huge size
        idat = data.index(b"IDAT") - 4
        n = int.from_bytes(data[idat:idat + 4], "big")
        body = bytearray(data[idat + 8:idat + 8 + n]); body[2] ^= 0x55
        rest = data[idat + 12 + n:]
        yield "zlib stream broken, CRC valid", data[:idat] + struct.pack(">I", n) + b"IDAT" + bytes(body) + \
            struct.pack(">I", zlib.crc32(b"IDAT" + body)) + rest
        for w, h in ((20000, 20000), (9000, 9000)):
            ihdr = b"IHDR" + struct.pack(">II", w, h) + data[24:29]
            yield f"claims {w}x{h}", data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    else:
        sof = data.index(b"\xff\xc0")
        yield "claims 20000x20000", data[:sof + 5] + struct.pack(">HH", 20000, 20000) + data[sof + 9:]

outcomes, broken = {}, []
for name, (data, how) in originals.items():
    path = folder / name
    path.write_bytes(data)
    good = read(path, how)
    counts = outcomes.setdefault(name, {"same": 0, "named": 0, "other pixels": 0})
    for case, bad in damaged(data):
        print(name, case, flush=True)
        path.write_bytes(bad)
        try:
            got = read(path, how)
        except DlcvkitError as e:
            counts["named"] += 1
            if str(path) not in str(e) or "\n" in str(e):
                broken.append(f"{name} {case}: {e}")
            if case.startswith(("zlib", "claims")):
                counts.setdefault("refused " + case, 0); counts["refused " + case] += 1
            continue
        except BaseException as e:
            broken.append(f"{name} {case}: {type(e).__name__}: {e}")
            continue
        same = all(g.shape == x.shape and (g == x).all() for g, x in zip(got, good))
        counts["same" if same else "other pixels"] += 1
print(json.dumps({"outcomes": outcomes, "broken": broken}))
"""


def test_one_damaged_byte_anywhere_never_crashes_and_is_named(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"the decoder died (exit {proc.returncode}) at: "
                                  f"{proc.stdout.strip().splitlines()[-1:]}\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["broken"] == []
    for name, counts in result["outcomes"].items():
        assert counts["named"] > 0, name
        if name.endswith(".png"):
            # a PNG's CRCs catch every single damaged byte: none decodes, to its own pixels or others
            assert counts["same"] == counts["other pixels"] == 0, (name, counts)
            assert counts["refused zlib stream broken, CRC valid"] == 1, (name, counts)
            assert counts["refused claims 20000x20000"] == counts["refused claims 9000x9000"] == 1, (name, counts)
        else:  # JPEG has no checksum: damage may decode, to other pixels, but never crashes
            assert counts["refused claims 20000x20000"] == 1, (name, counts)


def _flip_pixel_byte(path):
    """One byte of a PNG's IDAT data changed: its CRC no longer matches (libpng: 'IDAT: CRC error')."""
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))


def _claim_20000(path):
    """A JPEG whose frame header claims 20000x20000 pixels."""
    data = path.read_bytes()
    sof = data.index(b"\xff\xc0")
    path.write_bytes(data[:sof + 5] + struct.pack(">HH", 20000, 20000) + data[sof + 9:])


def _error_line(code, err) -> str:
    assert code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("dlcvkit: error: "), err
    return line


@pytest.fixture(scope="module")
def seg(tmp_path_factory, seg_data):
    """P2 data with one damaged mask, a clean copy, and a run trained (one step) with data.skip_bad=true."""
    root = tmp_path_factory.mktemp("damaged")
    (root / "seg.toml").write_text(SEG)
    shutil.copytree(seg_data, root / "data")
    shutil.copytree(seg_data, root / "clean")
    _flip_pixel_byte(root / "data" / "0001_mask.png")
    return root


def test_training_on_a_damaged_mask_names_it(seg, capsys):
    code, _, err = dlcvkit_here(capsys, "segment", "-r", seg / "seg.toml", "--data", seg / "data", "--out",
                                seg / "fails")
    line = _error_line(code, err)
    assert re.fullmatch(rf"dlcvkit: error: cannot decode image {re.escape(str(seg / 'data' / '0001_mask.png'))}: "
                        r"'IDAT' chunk at byte \d+: CRC error \(a damaged byte\); remove or replace it", line), line


def test_skip_bad_training_eval_and_tiled_prediction_skip_and_name_damaged_files(seg, capsys, synth_data):
    code, _, err = dlcvkit_here(capsys, "segment", "-r", seg / "seg.toml", "--data", seg / "data", "--out",
                                seg / "run", "--set", "data.skip_bad=true", "--max-steps", 1)
    assert code == 0, err
    assert re.search(r"skipped 1 of 4 samples that cannot be decoded: \S*0001_mask\.png", err), err

    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", seg / "data", "--skip-bad")
    assert code == 0, err
    assert re.search(r"skipped 1 of 4 samples that cannot be decoded: \S*0001_mask\.png", err), err
    assert "mean_iou" in out

    images = seg / "huge"
    shutil.copytree(synth_data("seg", n=3, size=32), images)
    _claim_20000(images / "0002_sat.jpg")
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", images, "--out",
                                seg / "pred", "--tile", 16, "--skip-bad")
    line = _error_line(code, err)  # the output is incomplete: not a success
    assert "skipped 1 of 3 images" in line and "0002_sat.jpg" in line, line
    assert sorted(p.name for p in (seg / "pred").iterdir()) == ["0000_mask.png", "0001_mask.png"]


def test_eval_of_a_damaged_prediction_names_it(seg, capsys):
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "data", "--labels", seg / "clean")
    line = _error_line(code, err)
    assert f"cannot decode image {seg / 'data' / '0001_mask.png'}: 'IDAT' chunk" in line, line
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "clean", "--labels", seg / "data")
    assert f"cannot decode image {seg / 'data' / '0001_mask.png'}" in _error_line(code, err)


@pytest.mark.slow
def test_two_processes_on_damaged_masks_end_in_exit_2_without_a_segfault(seg, seg_data):
    data = seg / "all_damaged"
    shutil.copytree(seg_data, data)
    for path in data.glob("*_mask.png"):  # each process meets one in its first batch
        _flip_pixel_byte(path)
    proc = dlcvkit("launch", "--procs", 2, "--", "segment", "-r", seg / "seg.toml", "--data", data, "--out",
                   seg / "two", check=False)
    assert proc.returncode != 0, proc.stderr
    # torchrun's report of each process: exit 2, or SIGTERM (-15) where torchrun stopped it after the other's
    # exit; never another signal (a segfault shows as -11)
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr
    assert not re.search(r"Segmentation fault|SIGSEGV|Signal 11|libpng error", proc.stderr), proc.stderr
    assert re.search(r"\[process [01] of 2\] error: cannot decode image \S*_mask\.png: 'IDAT' chunk at byte \d+: "
                     r"CRC error", proc.stderr), proc.stderr
