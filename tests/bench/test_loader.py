"""`dlcvkit bench loader`: the quick run writes every contender row; the contenders are checked against each other
before timing; the goals of the issue read the right rows. No timing is asserted."""

import json

import pytest
import torch

from dlcvkit.bench.loader import CONTENDERS, OPEN, check_contenders, photo_like
from dlcvkit.bench.report import goal_rows
from dlcvkit.bench.suite import SMOKE
from dlcvkit.bench.timing import ResultMismatch, record
from tests.cli_runner import dlcvkit_here


def test_the_quick_run_writes_every_contender_row(tmp_path, capsys):
    code, out, err = dlcvkit_here(capsys, "bench", "loader", "--quick", "--cache", tmp_path, "--json",
                                  tmp_path / "loader.json")
    assert code == 0, err
    records = json.loads((tmp_path / "loader.json").read_text())
    cases = SMOKE["loader"]["cases"]
    rows = {(r["case"].split()[0], r["workers"], r["contender"]) for r in records}
    assert rows == {(case, workers, c) for case in cases for workers in (0, 2) for c in (*CONTENDERS, OPEN)}
    assert len(records) == len(rows)
    for r in records:
        assert r["bench"] == "loader" and r["samples_per_s"] > 0 and r["ms_median"] > 0
        assert r["items"] == cases[r["case"].split()[0]]["n"] and r["speedup_vs"] == "dlcvkit decode"
    assert all(r["speedup"] == 1.0 for r in records if r["contender"] == "dlcvkit decode")
    assert len(list((tmp_path / "decoded").glob("*.dlcvcache"))) == len(cases)  # the warm caches, one per case


def _shifted(samples, levels):
    return [s | {"image": (s["image"].int() + levels).clamp(0, 255).to(torch.uint8)} for s in samples]


def test_contenders_that_disagree_are_not_timed():  # lists of samples stand in for the datasets
    images = [{"image": photo_like(i, 16, 16), "label": i} for i in range(2)]
    check_contenders(dict(zip(CONTENDERS, (None, _shifted(images, 3), images, images))))  # within tolerance
    stale = [s | {"image": s["image"].flip(-1)} for s in images]
    with pytest.raises(ResultMismatch, match="cache"):  # a cache giving other pixels than the dataset
        check_contenders(dict(zip(CONTENDERS, (None, images, images, stale))))
    with pytest.raises(ResultMismatch, match="scaled decode"):  # beyond the stated tolerance
        check_contenders(dict(zip(CONTENDERS, (None, _shifted(images, 9), images, images))))


def _loader_record(case, contender, speedup):
    return record("loader", case, contender, None) | {"speedup": speedup, "speedup_vs": "dlcvkit decode"}


def test_the_goals_apply_to_their_cases_only():
    records = [_loader_record("officehome 3000x2000 -> 224 px, 0 workers", "dlcvkit cache (warm)", 25.0),
               _loader_record("officehome 3000x2000 -> 224 px, 0 workers", "dlcvkit scaled decode", 2.0),
               _loader_record("p2 512x512 -> 512 px, 2 workers", "dlcvkit cache (warm)", 4.0),
               _loader_record("mini 84x84 -> 128 px, 0 workers", "dlcvkit cache (warm)", 1.5)]
    rows = [(case.split()[0], goal, value, met) for _, case, goal, value, met in goal_rows(records)]
    assert rows == [("officehome", ">= 20x dlcvkit decode", 25.0, True), ("p2", ">= 5x dlcvkit decode", 4.0, False),
                    ("officehome", ">= 3x dlcvkit decode", 2.0, False)]
