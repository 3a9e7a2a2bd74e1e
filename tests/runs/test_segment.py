"""`predict seg`'s data path: masks written by a background thread are byte for byte what writing them in the
loop gives, with 0, 1 or 2 decoding workers, and a mask that cannot be written fails the command in one line."""

import hashlib
from functools import partial

import pytest

from dlcvkit.bench.infer import make_run, segment_recipe
from dlcvkit.data.synth import synth_seg
from dlcvkit.runs.writer import BackgroundWriter
from dlcvkit.tasks.segment import SegmentTask
from tests.cli_runner import dlcvkit_here


class InlineWriter:
    """Writes in the loop's own thread, as `predict seg` did before the background writer."""

    def __enter__(self):
        return self

    def __exit__(self, *error):
        return None

    def submit(self, job, *args):
        job(*args)


def hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_seg")
    synth_seg(root / "images", n=5, size=32, seed=3)
    make_run(root / "run", segment_recipe("fcn8s", "test_resnet", 32), SegmentTask, "fp32", cpu=True)
    return root


def _predict(capsys, data, out, *extra):
    return dlcvkit_here(capsys, "predict", "seg", "--run", data / "run", "--images", data / "images", "--out", out,
                        "--batch-size", 2, *extra)


def test_background_writer_writes_the_same_bytes_as_writing_in_the_loop(data, capsys, monkeypatch, tmp_path):
    with monkeypatch.context() as patch:
        patch.setattr("dlcvkit.runs.segment.BackgroundWriter", InlineWriter)
        code, _, err = _predict(capsys, data, tmp_path / "inline", "--workers", 0)
    assert code == 0, err
    expected = hashes(tmp_path / "inline")
    assert len(expected) == 5
    # depth 1: the loop also waits on the writer (the path of a full queue)
    monkeypatch.setattr("dlcvkit.runs.segment.BackgroundWriter", partial(BackgroundWriter, depth=1))
    for workers in (0, 1, 2):
        code, _, err = _predict(capsys, data, tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0 and "wrote 5 masks" in err, err
        assert hashes(tmp_path / f"w{workers}") == expected


def test_a_mask_that_cannot_be_written_fails_in_one_line_and_keeps_the_user_files(data, capsys, tmp_path):
    out = tmp_path / "out"
    (out / "0002_mask.png").mkdir(parents=True)  # the user's folder where a mask goes
    (out / "0002_mask.png" / "notes.txt").write_text("mine")
    before = hashes(out / "0002_mask.png")
    code, _, err = _predict(capsys, data, out, "--workers", 1, "--overwrite")
    assert code == 2 and "Traceback" not in err and "wrote" not in err
    assert err.strip().splitlines() == [f"dlcvkit: error: cannot write image {out / '0002_mask.png'}: Is a directory; "
                                        "check that its folder is writable and has space"]
    assert hashes(out / "0002_mask.png") == before
