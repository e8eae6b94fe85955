import numpy as np

from convtrans.data.batching import make_batches, shard


def _lengths(n: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 60, n), rng.integers(1, 60, n)


def test_batches_respect_the_token_budget_and_cover_every_example_once() -> None:
    src, tgt = _lengths()
    batches, skipped = make_batches(src, tgt, max_tokens=300, seed=1, epoch=1, max_src_len=1000, max_tgt_len=1000)
    assert skipped == 0
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for batch in batches:
        assert len(batch) * (np.maximum(src[batch], tgt[batch]).max() + 1) <= 300


def test_order_is_a_function_of_seed_and_epoch() -> None:
    src, tgt = _lengths()
    run = lambda seed, epoch: [b.tolist() for b in make_batches(src, tgt, 300, seed, epoch, 1000, 1000)[0]]
    assert run(1, 1) == run(1, 1)
    assert run(1, 1) != run(1, 2) and run(1, 1) != run(2, 1)


def test_too_long_examples_are_skipped_and_counted() -> None:
    src, tgt = np.array([5, 50, 5, 5]), np.array([5, 5, 70, 5])
    batches, skipped = make_batches(src, tgt, 1000, 0, 0, max_src_len=40, max_tgt_len=60)
    assert skipped == 2 and sorted(np.concatenate(batches).tolist()) == [0, 3]


def test_shards_interleave_with_equal_counts() -> None:
    batches = [np.array([i]) for i in range(7)]
    assert [b[0] for b in shard(batches, 0, 2)] == [0, 2, 4]
    assert [b[0] for b in shard(batches, 1, 2)] == [1, 3, 5]


def test_documents_of_similar_length_share_a_batch() -> None:
    """Summarization shape: sources of 75-500 tokens, targets of 10-40. Batches must be grouped by
    the long side, so padding stays small (sorting by target first put a 500-token document beside
    100-token ones)."""
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(75, 500, 2000), rng.integers(10, 40, 2000)
    batches, _ = make_batches(src, tgt, 8192, seed=1, epoch=1, max_src_len=1000, max_tgt_len=1000)
    real = sum(int((src[b] + 1).sum()) for b in batches)
    padded = sum(len(b) * int(src[b].max() + 1) for b in batches)
    assert real / padded > 0.97
