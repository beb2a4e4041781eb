"""Properties of the image sample and the target draw (D26), over generated inputs (hypothesis).

The promises of ``mtlx_core.explain.target_draw``: a larger sample only adds images and keeps the earlier
draws; an image's draw is ``k`` of its own targets; the draw is stratified (with the same targets on every
image, no target is drawn twice more often than another at any point of the sample).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mtlx_core.explain.target_draw import draw_targets, sample_images

FAST = settings(max_examples=40, deadline=None)


@dataclass(frozen=True)
class T:
    target_id: int


candidate_sets = st.lists(st.sets(st.integers(0, 12), max_size=8), min_size=1, max_size=10)


@FAST
@given(n_split=st.integers(0, 60), n=st.integers(0, 70), more=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_image_sample_is_a_prefix_of_every_larger_sample(n_split: int, n: int, more: int, seed: int) -> None:
    small, large = sample_images(n_split, n, seed), sample_images(n_split, n + more, seed)
    assert large[:len(small)] == small
    assert len(small) == min(n, n_split)
    assert len(set(large)) == len(large)
    assert all(0 <= i < n_split for i in large)


@FAST
@given(sets=candidate_sets, k=st.one_of(st.none(), st.integers(1, 4)), seed=st.integers(0, 1000),
       m=st.integers(0, 10))
def test_a_draw_keeps_the_draws_of_a_shorter_sample_and_takes_k_of_each_images_targets(
        sets: list[set[int]], k: int | None, seed: int, m: int) -> None:
    cands = [[T(i) for i in s] for s in sets]
    keys = [f"img{j}" for j in range(len(cands))]
    full = draw_targets(cands, k, seed, keys, "segmentation")
    m = min(m, len(cands))
    assert draw_targets(cands[:m], k, seed, keys[:m], "segmentation") == full[:m]
    for s, drawn in zip(sets, full, strict=True):
        ids = [t.target_id for t in drawn]
        assert ids == sorted(ids)
        assert set(ids) <= s
        assert len(ids) == (len(s) if k is None else min(k, len(s)))


@FAST
@given(n_targets=st.integers(2, 9), k=st.integers(1, 8), n_images=st.integers(1, 12), seed=st.integers(0, 1000))
def test_with_the_same_targets_everywhere_the_draw_stays_balanced(n_targets: int, k: int, n_images: int,
                                                                  seed: int) -> None:
    cands = [[T(i) for i in range(n_targets)] for _ in range(n_images)]
    keys = [f"img{j}" for j in range(n_images)]
    drawn: Counter[int] = Counter()
    for per_image in draw_targets(cands, k, seed, keys, "normals"):
        drawn.update(t.target_id for t in per_image)
        counts = [drawn[i] for i in range(n_targets)]
        assert max(counts) - min(counts) <= 1, counts
