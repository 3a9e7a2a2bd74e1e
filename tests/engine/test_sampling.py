import pytest
import torch

from dlcvkit.engine.sampling import EvalBatches, TrainBatches
from dlcvkit.errors import DlcvkitError


def test_process_slices_make_up_the_single_process_batch():
    single = list(TrainBatches(23, 6, rank=0, world=1, seed=3))
    ranks = [list(TrainBatches(23, 6, rank=r, world=2, seed=3)) for r in range(2)]
    assert len(single) == 3  # 23 // 6, last partial batch dropped
    for b, batch in enumerate(single):
        assert ranks[0][b] + ranks[1][b] == batch


def test_epochs_reshuffle_and_position_skips_without_changing_order():
    s = TrainBatches(40, 8, rank=0, world=1, seed=0)
    first = list(s)
    s.set_position(epoch=1)
    second = list(s)
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, []))
    s.set_position(epoch=1, start_batch=2)
    assert list(s) == second[2:] and len(s) == 3
    # the order is a pure function of (seed, epoch): same as randperm with seed + epoch
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:8].tolist()
    assert second[0] == expected


def test_global_batch_must_split_evenly():
    with pytest.raises(DlcvkitError, match="batch_size=5"):
        TrainBatches(20, 5, rank=0, world=2, seed=0)
    with pytest.raises(DlcvkitError, match="fewer than one batch"):
        TrainBatches(3, 4, rank=0, world=1, seed=0)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_eval_counts_each_sample_once_in_the_same_batches(world):
    n, b = 37, 4
    single = list(EvalBatches(n, b, rank=0, world=1))
    shards = [list(EvalBatches(n, b, rank=r, world=world)) for r in range(world)]
    all_batches = [batch for shard in shards for batch in shard]
    assert sorted(map(tuple, all_batches)) == sorted(map(tuple, single))
    assert sorted(sum(all_batches, [])) == list(range(n))
    assert sum(len(s) for s in shards) == len(single) == 10


def test_eval_with_more_processes_than_batches():
    shards = [list(EvalBatches(3, 4, rank=r, world=2)) for r in range(2)]
    assert shards == [[[0, 1, 2]], []]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_by_key_hold_one_key_and_every_sample_once(world):
    keys = ["a", "b", "a", "a", "c", "b", "a"]  # e.g. image sizes
    single = list(EvalBatches(len(keys), 2, rank=0, world=1, keys=keys))
    assert single == [[0, 2], [3, 6], [1, 5], [4]]  # each key's samples in order, keys by first appearance
    shards = [list(EvalBatches(len(keys), 2, rank=r, world=world, keys=keys)) for r in range(world)]
    assert sorted(b for shard in shards for b in shard) == sorted(single)  # the same batches on any world size
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(len(keys)))
