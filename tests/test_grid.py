"""Chunk-grid maths: the order of chunk names sorted as strings, against ``sorted`` itself."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refmount.grid import chunk_name, name_rank, name_unrank, names_differ

grids = st.lists(st.integers(1, 130), min_size=1, max_size=3).filter(lambda g: math.prod(g) <= 5000)


@settings(max_examples=150, deadline=None)
@given(grids)
def test_name_rank_is_the_place_in_the_sorted_listing(grid):
    total = math.prod(grid)
    listing = sorted(range(total), key=lambda n: chunk_name(n, grid))  # "0.10" < "0.2", as ls and dask sort
    assert [name_rank(n, grid) for n in listing] == list(range(total))
    assert [name_unrank(r, grid) for r in range(total)] == listing
    assert names_differ(grid) == (listing != list(range(total)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 10**15), min_size=1, max_size=3), st.data())
def test_name_order_of_huge_grids_without_listing_them(grid, data):
    """Arrays of up to 10^45 chunks: each place maps back to its chunk, and the next place holds
    the next name in string order."""
    total = math.prod(grid)
    rank = data.draw(st.integers(0, total - 1))
    n = name_unrank(rank, grid)
    assert 0 <= n < total and name_rank(n, grid) == rank
    if rank + 1 < total:
        assert chunk_name(n, grid) < chunk_name(name_unrank(rank + 1, grid), grid)


def test_a_place_past_the_names_is_refused():
    with pytest.raises(ValueError):
        name_unrank(12, [3, 4])
