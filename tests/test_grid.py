"""Grids and contact sheets: the layout of one or two knobs and seeds, labels that fit and are never cut."""

import itertools

import numpy as np
import pytest
from PIL import Image

from svd_core.grid import BG, _font, _text_w, grid_frames, grid_layout, plan_grid


def _two_knob_coords():
    return [{"motion_bucket_id": a, "noise_aug_strength": b} for a, b in itertools.product((32, 127, 255), (0.0, 0.1))]


def test_two_knob_grid_is_three_columns_by_two_rows():
    coords = _two_knob_coords()  # the order grid_cells makes: the second knob varies fastest
    layout = grid_layout(6, coords=coords)
    assert (layout.n_rows, layout.n_cols) == (2, 3)
    assert layout.positions == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert (layout.col_title, layout.col_labels) == ("motion_bucket_id", ["32", "127", "255"])
    assert (layout.row_title, layout.row_labels) == ("noise_aug_strength", ["0", "0.1"])
    plan = plan_grid(layout, 96, 64)
    xs = sorted({x for x, _ in plan.tiles})
    ys = sorted({y for _, y in plan.tiles})
    assert len(xs) == 3 and len(ys) == 2
    assert plan.tiles[1] == (xs[0], ys[1]) and plan.tiles[4] == (xs[2], ys[0])


def test_seeds_are_a_further_row_axis():
    coords = [{"motion_bucket_id": a, "seed": s} for a in (0, 255) for s in (23, 24, 25)]
    layout = grid_layout(6, coords=coords)
    assert (layout.n_rows, layout.n_cols, layout.row_labels) == (3, 2, ["seed 23", "seed 24", "seed 25"])
    three = [{**c, "seed": s} for c in _two_knob_coords() for s in (1, 2)]
    layout = grid_layout(12, coords=three)
    assert (layout.n_rows, layout.n_cols) == (4, 3)
    assert layout.row_labels == ["0 · seed 1", "0 · seed 2", "0.1 · seed 1", "0.1 · seed 2"]


def _boxes_hold_all_text(img: np.ndarray, plan) -> None:
    """Every drawn pixel outside the tiles lies inside a text box, each box has text, and each line fits."""
    mask = np.zeros(img.shape[:2], bool)
    tw, th = plan.tile_size
    for x, y in plan.tiles:
        mask[y:y + th, x:x + tw] = True
    for t in plan.texts:
        x0, y0, x1, y1 = t.box
        assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0], t
        assert all(_text_w(_font(t.size), line) <= x1 - x0 for line in t.lines), t
        assert (img[y0:y1, x0:x1] != BG).any(), f"nothing drawn for {t.lines}"
        mask[y0:y1, x0:x1] = True
    spill = (img != BG).any(axis=-1) & ~mask
    assert not spill.any(), f"text outside its box at {np.argwhere(spill)[:3]}"


@pytest.mark.parametrize("tile", [(96, 64), (40, 24), (1024, 576)])
def test_labels_fit_and_are_never_cut(tile):
    tw, th = tile
    coords = [{**c, "seed": s} for c in _two_knob_coords() for s in (23, 123456789)]
    videos = [np.zeros((2, th, tw, 3), np.uint8) for _ in coords]
    caption = "every cell plays at 7 fps"
    grid = grid_frames(videos, ["x"] * len(videos), coords=coords, caption=caption, max_side=100_000)
    layout = grid_layout(len(videos), coords=coords)
    plan = plan_grid(layout, tw, th, 4, caption)
    assert grid.shape[1:3] == (plan.height, plan.width)
    _boxes_hold_all_text(grid[0], plan)
    texts = [" ".join(t.lines) for t in plan.texts]
    assert {"32", "127", "255"} <= set(texts)
    if tw >= 200:  # room enough: nothing wrapped
        assert {"0.1 · seed 123456789", "motion_bucket_id", "noise_aug_strength", caption} <= set(texts)


def test_large_grids_are_scaled_to_play_in_browsers():
    videos = [np.zeros((2, 576, 1024, 3), np.uint8) for _ in range(6)]
    grid = grid_frames(videos, ["x"] * 6, coords=_two_knob_coords())
    assert max(grid.shape[1:3]) <= 4096 and grid.shape[2] > 2000


def test_wrapped_one_knob_grid_labels_each_tile():
    coords = [{"motion_bucket_id": v} for v in range(0, 800, 100)]
    layout = grid_layout(8, coords=coords)
    assert (layout.n_rows, layout.n_cols) == (2, 4) and layout.tile_labels[5] == "motion_bucket_id=500"
    plan = plan_grid(layout, 64, 48)
    img = Image.new("RGB", (plan.width, plan.height), BG)
    from svd_core.grid import _draw_texts

    _draw_texts(img, plan.texts)
    _boxes_hold_all_text(np.asarray(img), plan)


def test_contact_sheet_labels_fit(tmp_path):
    from svd_core.grid import contact_sheet

    coords = [{**c, "seed": 23} for c in _two_knob_coords()]
    videos = [np.zeros((5, 40, 60, 3), np.uint8) + 0 for _ in coords]
    sheet = np.asarray(contact_sheet(videos, ["x"] * 6, coords=coords, max_frames=3))
    # the label column is left of the frames and holds drawn text; frames are untouched (black here)
    frames_w = 3 * 60
    label_w = sheet.shape[1] - frames_w
    assert label_w >= 120 and (sheet[:, :label_w] != 0).any()
