"""``ftrl_core.keymap.KeyMap`` against a dict doing the same calls: batches added only when
all new (an old key or a repeat among them changes nothing), single puts, values set on the
keys present, deletions of many and of one (backward shift: the keys after a hole stay
findable), growth."""

from __future__ import annotations

import numpy as np

from ftrl_core.keymap import ABSENT, STAND_IN, KeyMap


def test_a_keymap_does_what_a_dict_does() -> None:
    rng = np.random.default_rng(7)
    # a small key space, so that batches often hit old keys and repeats, and deletions
    # leave holes inside probe runs; 0 is a key like any other
    space = np.concatenate([np.zeros(1, np.uint64),
                            rng.integers(1, 2**64 - 1, size=3000, dtype=np.uint64)])
    m, ref = KeyMap(), {}
    refused = added = 0
    for step in range(3000):
        op = step % 6
        keys = rng.choice(space, size=int(rng.integers(1, 40)))
        if op in (0, 1):
            values = rng.integers(0, 1 << 40, size=keys.size)
            fresh = len(set(keys.tolist())) == keys.size and \
                not any(k in ref for k in keys.tolist())
            assert m.add_new(keys, values) == fresh
            if fresh:
                ref.update(zip(keys.tolist(), values.tolist(), strict=True))
                added += 1
            else:
                refused += 1
        elif op == 2:
            key, value = int(keys[0]), int(rng.integers(-5, 1 << 40))
            m.put(key, value)
            ref[key] = value
        elif op == 3:
            value = int(rng.integers(-5, 5))
            absent = sum(k not in ref for k in keys.tolist())
            assert m.set_present(keys, value) == absent
            ref.update((k, value) for k in keys.tolist() if k in ref)
        elif op == 5:
            key = int(keys[0])
            assert m.remove(key) == (key in ref)
            ref.pop(key, None)
        else:
            unique = np.unique(keys)
            absent = sum(k not in ref for k in unique.tolist())
            assert m.delete(unique) == absent
            for k in unique.tolist():
                ref.pop(k, None)
        probe = rng.choice(space, size=50)
        want = [ref.get(k, ABSENT) for k in probe.tolist()]
        assert m.get_many(probe).tolist() == want
        assert [m.get(k) for k in probe.tolist()[:5]] == want[:5]
        assert len(m) == len(ref)
    assert refused > 100 and added > 100
    fresh = rng.integers(1, 2**64 - 1, size=1500, dtype=np.uint64)
    assert m.add_new(fresh, np.arange(1500))
    ref.update(zip(fresh.tolist(), range(1500), strict=True))
    assert m.table.capacity > 1024  # it grew, and kept every entry
    assert m.get_many(space).tolist() == [ref.get(k, ABSENT) for k in space.tolist()]
    keys, values = m.items()
    shown = {int(k) if k != STAND_IN else 0: int(v) for k, v in zip(keys, values, strict=True)}
    assert shown == ref
