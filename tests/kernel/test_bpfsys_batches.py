"""BpfMap.batches against real maps: every element comes back, in batches that stay within
BATCH_BYTES whatever the value size (per-CPU values grow with the CPU count)."""

from __future__ import annotations

import struct

import pytest

from otelpeers.kernel import bpfsys

pytestmark = pytest.mark.kernel

ELEMENTS = 5000


def _filled(map_type: int, value_size: int) -> bpfsys.BpfMap:
    fd = bpfsys.map_create(map_type, 8, value_size, ELEMENTS, name="otelp_test_batch")
    m = bpfsys.BpfMap(fd)
    for i in range(ELEMENTS):
        m.update(struct.pack("Q", i), struct.pack("Q", i * 3).ljust(m.value_size, b"\0"))
    return m


@pytest.mark.parametrize(("map_type", "value_size"), [
    (bpfsys.MAP_TYPE_HASH, 8),
    (bpfsys.MAP_TYPE_HASH, 200),
    (5, 200),  # BPF_MAP_TYPE_PERCPU_HASH: one 200-byte value per possible CPU
])
def test_batches_return_every_element_within_the_byte_bound(map_type: int,
                                                            value_size: int) -> None:
    m = _filled(map_type, value_size)
    try:
        per_batch = m.batch_elements()
        assert 64 <= per_batch <= m.BATCH
        assert per_batch * (m.key_size + m.value_size) <= max(
            m.BATCH_BYTES, 64 * (m.key_size + m.value_size))
        seen: dict[int, int] = {}
        calls = 0
        for keys, values, n in m.batches():
            calls += 1
            assert n <= per_batch
            for i in range(n):
                k = struct.unpack_from("Q", keys, i * m.key_size)[0]
                seen[k] = struct.unpack_from("Q", values, i * m.value_size)[0]
        assert seen == {i: i * 3 for i in range(ELEMENTS)}
        assert calls >= ELEMENTS // per_batch
        # the walk can be repeated with the kept buffers, and delete empties the map
        assert m.read_all(delete=True)[2] == ELEMENTS
        assert m.read_all()[2] == 0
    finally:
        m.close()
