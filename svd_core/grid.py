"""Side-by-side grids and contact sheets of several videos (frames: uint8 arrays (F, H, W, 3)).

A comparison is laid out as a real grid: the first varied knob across (columns), the second down (rows), seeds
as a further row axis; axis headings name the knobs, row and column labels give the values. Labels are fitted:
measured with PIL, wrapped and shrunk, never cut. `plan_grid` is pure geometry (tested); `grid_frames` and
`contact_sheet` draw it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .params import format_value as _fmt
from .video import check_frames

MAX_COLS_1D = 6  # one knob: up to this many values in one row, more wrap (each tile then carries its label)
MIN_FONT = 8
BG, FG, DIM = (0, 0, 0), (255, 255, 255), (170, 170, 170)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _text_w(font, text: str) -> int:
    if not text:
        return 0
    box = font.getbbox(text)
    return box[2] - min(0, box[0])


def _line_h(size: int) -> int:
    return round(size * 1.25)


def _wrap(font, text: str, max_w: int) -> list[str] | None:
    """Greedy wrap at spaces, then after '=', '_', ',' and '·'; None when one piece is wider than max_w."""
    import re

    pieces = [p for p in re.split(r"(?<=[ =_,·])", text) if p]
    lines, cur = [], ""
    for p in pieces:
        if _text_w(font, (cur + p).rstrip()) <= max_w:
            cur += p
            continue
        if cur:
            lines.append(cur.rstrip())
        if _text_w(font, p.rstrip()) > max_w:
            return None
        cur = p.lstrip()
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def fit_text(text: str, max_w: int, size: int, max_lines: int = 3) -> tuple[int, list[str]]:
    """(font size, lines) so that every line is at most `max_w` pixels wide: one line at `size` if it fits,
    else wrapped, else smaller, down to MIN_FONT; at MIN_FONT a word that is still too wide is split."""
    max_w = max(1, max_w)
    for s in range(max(size, MIN_FONT), MIN_FONT - 1, -1):
        font = _font(s)
        lines = [text] if _text_w(font, text) <= max_w else _wrap(font, text, max_w)
        if lines is not None and (len(lines) <= max_lines or s == MIN_FONT):
            return s, lines
    font, lines, cur = _font(MIN_FONT), [], ""
    for ch in text:
        if cur and _text_w(font, cur + ch) > max_w:
            lines.append(cur)
            cur = ""
        cur += ch
    return MIN_FONT, lines + ([cur] if cur else [])


@dataclass(frozen=True)
class GridLayout:
    """Where each video goes: (row, col) per video, and the headings and labels."""

    n_rows: int
    n_cols: int
    positions: list[tuple[int, int]]
    col_title: str = ""
    row_title: str = ""
    col_labels: list[str] = dataclasses.field(default_factory=list)
    row_labels: list[str] = dataclasses.field(default_factory=list)
    tile_labels: list[str] = dataclasses.field(default_factory=list)  # only when no axis labels say it


def grid_layout(n: int, labels=None, coords: list[dict] | None = None) -> GridLayout:
    """A grid for `n` videos. `coords`: per video an ordered {name: value} of what differs (knob 1, knob 2, seed);
    the first name runs across, the rest down. Without coords: rows of up to MAX_COLS_1D labelled tiles."""
    labels = list(labels or [""] * n)
    names = list(coords[0]) if coords else []
    if coords and (len(coords) != n or any(list(c) != names for c in coords)):
        raise ValueError("coords must give the same names for every video")
    if not names or (len(names) == 1 and len({c[names[0]] for c in coords}) > MAX_COLS_1D):
        cols = min(n, MAX_COLS_1D if not names else 4)
        tile_labels = labels if not names else [f"{names[0]}={_fmt(c[names[0]])}" for c in coords]
        return GridLayout(-(-n // cols), cols, [divmod(i, cols) for i in range(n)], tile_labels=tile_labels)
    col_name, row_names = names[0], names[1:]
    col_vals = list(dict.fromkeys(c[col_name] for c in coords))
    row_keys = list(dict.fromkeys(tuple(c[k] for k in row_names) for c in coords))
    positions = [(row_keys.index(tuple(c[k] for k in row_names)), col_vals.index(c[col_name])) for c in coords]
    if len(set(positions)) != n:
        raise ValueError("two videos share one grid cell: coords must differ")

    def row_label(key):
        return " · ".join(_fmt(v) if i == 0 and row_names[0] != "seed" else f"{name} {_fmt(v)}"
                          for i, (name, v) in enumerate(zip(row_names, key)))
    return GridLayout(len(row_keys) or 1, len(col_vals), positions, col_title=col_name,
                      row_title=" · ".join(row_names[:1]) if row_names else "",
                      col_labels=[_fmt(v) for v in col_vals],
                      row_labels=[row_label(k) for k in row_keys] if row_names else [])


@dataclass(frozen=True)
class TextBox:
    lines: list[str]
    size: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: the lines are drawn inside, centred
    color: tuple[int, int, int] = FG


@dataclass(frozen=True)
class GridPlan:
    width: int
    height: int
    tiles: list[tuple[int, int]]  # top-left of each video's tile
    tile_size: tuple[int, int]
    texts: list[TextBox]


def plan_grid(layout: GridLayout, tile_w: int, tile_h: int, gap: int = 4, caption: str = "",
              size: int | None = None) -> GridPlan:
    """Pixel geometry of a grid: heading band (column knob, caption), column labels, row label column, tiles."""
    size = size or max(12, min(28, tile_h // 12))
    pad = max(2, size // 4)
    texts: list[TextBox] = []
    cols_w = layout.n_cols * tile_w + (layout.n_cols - 1) * gap
    # row label column: wide enough for the row title and labels at a readable size, at most half a tile
    row_w = 0
    if layout.row_labels:
        want = max(_text_w(_font(size), t) for t in [layout.row_title, *layout.row_labels]) + 2 * pad
        row_w = min(want, max(80, int(tile_w * 0.5)))

    def fitted(text, width, color=FG, sz=size):
        s, lines = fit_text(text, width - 2 * pad, sz)
        return s, lines, len(lines) * _line_h(s) + 2 * pad, color

    # heading band: column title over the columns, row title in the corner, caption below the title
    head = []
    if layout.col_title:
        head.append(("col_title", *fitted(layout.col_title, cols_w)))
    if caption:
        head.append(("caption", *fitted(caption, cols_w + row_w, DIM, max(MIN_FONT, size * 3 // 4))))
    corner = fitted(layout.row_title, row_w) if layout.row_title and row_w else None
    col_lab = [fitted(t, tile_w) for t in layout.col_labels]
    col_lab_h = max((f[2] for f in col_lab), default=0)
    title_h = sum(h[3] for h in head if h[0] == "col_title")
    if corner:  # the row title sits level with the column labels
        col_lab_h = max(col_lab_h, corner[2])
    tile_lab = [fitted(t, tile_w) for t in layout.tile_labels]
    tile_lab_h = max((f[2] for f in tile_lab), default=0)
    row_lab = [fitted(t, row_w) for t in layout.row_labels]
    row_h = max(tile_h, max((f[2] for f in row_lab), default=0)) + tile_lab_h

    y = 0
    for kind, s, lines, h, color in head:
        if kind == "caption":
            continue
        texts.append(TextBox(lines, s, (row_w, y, row_w + cols_w, y + h), color))
        y += h
    top = title_h + col_lab_h
    if corner:
        texts.append(TextBox(corner[1], corner[0], (0, title_h, row_w, top), DIM))
    for c, (s, lines, _, color) in enumerate(col_lab):
        x = row_w + c * (tile_w + gap)
        texts.append(TextBox(lines, s, (x, title_h, x + tile_w, top), color))
    tiles = []
    for r, c in layout.positions:
        x, y0 = row_w + c * (tile_w + gap), top + r * (row_h + gap)
        tiles.append((x, y0 + tile_lab_h))
    for i, (s, lines, _, color) in enumerate(tile_lab):
        x, y0 = tiles[i][0], tiles[i][1] - tile_lab_h
        texts.append(TextBox(lines, s, (x, y0, x + tile_w, y0 + tile_lab_h), color))
    for r, (s, lines, h, color) in enumerate(row_lab):
        y0 = top + r * (row_h + gap) + tile_lab_h
        texts.append(TextBox(lines, s, (0, y0, row_w, y0 + max(tile_h, h)), color))
    height = top + layout.n_rows * row_h + (layout.n_rows - 1) * gap
    for kind, s, lines, h, color in head:
        if kind == "caption":
            texts.append(TextBox(lines, s, (0, height, row_w + cols_w, height + h), color))
            height += h
    height += height % 2  # yuv420p needs even sizes
    width = row_w + cols_w
    return GridPlan(width + width % 2, height, tiles, (tile_w, tile_h), texts)


def _draw_texts(img: Image.Image, texts: list[TextBox]) -> None:
    draw = ImageDraw.Draw(img)
    for t in texts:
        font = _font(t.size)
        x0, y0, x1, y1 = t.box
        lh = _line_h(t.size)
        y = y0 + (y1 - y0 - lh * len(t.lines)) // 2
        for line in t.lines:
            draw.text((x0 + (x1 - x0 - _text_w(font, line)) // 2, y), line, fill=t.color, font=font)
            y += lh


def _tile_size(videos) -> tuple[int, int]:
    return max(v.shape[2] for v in videos), max(v.shape[1] for v in videos)


def _fit_tiles(videos, tw: int, th: int, max_side: int, layout: GridLayout) -> tuple[list[np.ndarray], int, int]:
    """Scale tiles down so the grid stays within `max_side` pixels (browsers do not play larger H.264)."""
    k = min(1.0, max_side / (layout.n_cols * tw * 1.4), max_side / (layout.n_rows * th * 1.2))
    if k >= 1.0:
        return videos, tw, th
    import cv2

    out = []
    for v in videos:
        w, h = max(2, round(v.shape[2] * k)), max(2, round(v.shape[1] * k))
        out.append(np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in v]))
    return out, max(2, round(tw * k)), max(2, round(th * k))


def grid_frames(videos, labels, cols: int | None = None, gap: int = 4, coords: list[dict] | None = None,
                caption: str = "", max_side: int = 4096) -> np.ndarray:
    """Side-by-side video laid out by `grid_layout` (`coords`: what differs per video; without them, rows of
    labelled tiles, `cols` across). Tiles are letterboxed to a common size; shorter videos hold their last
    frame. `caption`: a line under the grid (e.g. the common frame rate)."""
    videos = [check_frames(v) for v in videos]
    if len(labels) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
    layout = grid_layout(len(videos), labels, coords)
    if cols and not coords:
        layout = GridLayout(-(-len(videos) // cols), cols, [divmod(i, cols) for i in range(len(videos))],
                            tile_labels=list(labels))
    tw, th = _tile_size(videos)
    videos, tw, th = _fit_tiles(videos, tw, th, max_side, layout)
    plan = plan_grid(layout, tw, th, gap, caption)
    background = Image.new("RGB", (plan.width, plan.height), BG)
    _draw_texts(background, plan.texts)
    base = np.asarray(background)
    n = max(len(v) for v in videos)
    out = np.repeat(base[None], n, axis=0)
    for v, (x, y) in zip(videos, plan.tiles):
        oy, ox = y + (th - v.shape[1]) // 2, x + (tw - v.shape[2]) // 2
        out[:len(v), oy:oy + v.shape[1], ox:ox + v.shape[2]] = v
        out[len(v):, oy:oy + v.shape[1], ox:ox + v.shape[2]] = v[-1]
    return out


def contact_sheet(videos, labels, max_frames: int = 8, coords: list[dict] | None = None) -> Image.Image:
    """One row per video, up to `max_frames` evenly spaced frames across; a label column on the left says what
    differs (each knob and seed on its own line), a heading row gives the frame numbers."""
    videos = [check_frames(v) for v in videos]
    tw, th = _tile_size(videos)
    k = min(max_frames, max(len(v) for v in videos))
    items = [[f"{n}={_fmt(v)}" for n, v in c.items()] for c in coords] if coords else [[t] for t in labels]
    size = max(12, min(24, th // 8))
    label_w = max(120, min(tw, max(_text_w(_font(size), t) for it in items for t in it) + 8))
    fits = []
    for it in items:  # one line per knob (wrapped when it must be), all at the smallest size any of them needs
        parts = [fit_text(t, label_w - 8, size, max_lines=2) for t in it]
        s_min = min(p[0] for p in parts)
        fits.append((s_min, [line for t in it for line in fit_text(t, label_w - 8, s_min, max_lines=2)[1]]))
    row_h = max(th, max(len(lines) * _line_h(s) + 8 for s, lines in fits))
    head_h = _line_h(size) + 8
    sheet = Image.new("RGB", (label_w + k * tw, head_h + len(videos) * row_h), BG)
    boxes = []
    n_max = max(len(v) for v in videos)
    for c, i in enumerate(np.linspace(0, n_max - 1, k).round().astype(int)):
        x = label_w + c * tw
        boxes.append(TextBox(*fit_text(f"frame {i}", tw - 4, size)[::-1], (x, 0, x + tw, head_h), DIM))
    for r, (v, (s, lines)) in enumerate(zip(videos, fits)):
        y = head_h + r * row_h
        boxes.append(TextBox(lines, s, (0, y, label_w, y + row_h)))
        for c, i in enumerate(np.linspace(0, len(v) - 1, k).round().astype(int)):
            sheet.paste(Image.fromarray(v[i]), (label_w + c * tw, y + (row_h - v.shape[1]) // 2))
    _draw_texts(sheet, boxes)
    return sheet
