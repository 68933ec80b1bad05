"""Batched eviction from insertion-ordered dicts."""

from __future__ import annotations

from otelpeers.oldest import BATCH_SHARE, eviction_batch, oldest_keys


def test_small_tables_evict_exactly_what_is_over_and_big_ones_a_share() -> None:
    assert eviction_batch(100) == 1 and eviction_batch(100, excess=3) == 3
    assert eviction_batch(BATCH_SHARE * 2 - 1) == 1
    assert eviction_batch(100_000) == 100_000 // BATCH_SHARE == 390
    assert eviction_batch(100_000, excess=1000) == 1000  # never fewer than the excess
    assert eviction_batch(0) == 1


def test_oldest_keys_follow_insertion_order_past_deleted_entries() -> None:
    table = {k: None for k in range(10)}
    for k in (0, 1, 5):
        del table[k]
    table[0] = None  # re-inserted: now the newest
    assert oldest_keys(table, 3) == [2, 3, 4]
    assert oldest_keys(table, 100) == [2, 3, 4, 6, 7, 8, 9, 0]
    for k in oldest_keys(table, 2):  # a list: deleting while using it is safe
        del table[k]
    assert list(table) == [4, 6, 7, 8, 9, 0]
