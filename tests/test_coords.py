import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liif.coords import axis_centres, make_coord


def test_centres_known_values():
    assert axis_centres(4).tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert axis_centres(1).tolist() == [0.0]


def test_make_coord_row_major_row_first():
    c = make_coord((2, 3), flatten=False)
    assert c.shape == (2, 3, 2)
    assert torch.allclose(c[0, 0], torch.tensor([-0.5, -2 / 3]))
    assert torch.allclose(c[1, 2], torch.tensor([0.5, 2 / 3]))
    flat = make_coord((2, 3))
    assert flat.shape == (6, 2) and torch.equal(flat[4], c[1, 1])


def test_official_float32_recipe_bit_exact():
    # float32(2r) * k + float32(v0 + r), not float64 then cast
    n = 2040
    r = 1.0 / n
    expect = (torch.arange(n).float() * torch.tensor(2 * r, dtype=torch.float32)
              + torch.tensor(-1 + r, dtype=torch.float32))
    assert torch.equal(axis_centres(n), expect)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), data=st.data())
def test_slices_equal_full_sequence(n, data):
    start = data.draw(st.integers(0, n - 1))
    count = data.draw(st.integers(1, n - start))
    assert torch.equal(axis_centres(n, start=start, count=count), axis_centres(n)[start:start + count])


def test_render_cell_is_two_over_the_output_size(official):
    """The cell a render decodes with: (2/H, 2/W) of the output, whatever the input size (LIIF)."""
    model, _ = official
    assert model.render_cell((4, 8), (2, 4)) == (0.5, 0.25)
    assert model.render_cell((4, 8), (1, 1)) == (0.5, 0.25)
