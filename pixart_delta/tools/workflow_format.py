"""API-format <-> UI-format (LiteGraph) workflows, using the node definitions of a running ComfyUI.

The bundled workflows are authored in API format (workflows/api/) and the drag-and-drop UI files
(example_workflows/) are generated from them, with a Note node naming the model files; `ui_to_api` does what
ComfyUI's frontend does when it queues a UI graph, so a test can check the two stay in sync. `api_to_ui` also
lays the graph out (`layout`): left to right in columns, nodes sized as the frontend draws them, in groups.
"""
from __future__ import annotations

import bisect
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def input_specs(cls) -> list[tuple[str, object, dict]]:
    types = cls.INPUT_TYPES()
    specs = []
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            specs.append((name, spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return specs


def is_widget(type_) -> bool:
    return isinstance(type_, list) or type_ in WIDGET_TYPES


def has_seed_control(name: str, type_, opts: dict) -> bool:
    return type_ == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _layers(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid, seen=()):
        if nid in depth:
            return depth[nid]
        ups = [v[0] for v in api[nid]["inputs"].values() if _is_link(v) and v[0] in api and v[0] not in seen]
        depth[nid] = 1 + max((visit(u, seen + (nid,)) for u in ups), default=-1)
        return depth[nid]
    for nid in api:
        visit(nid)
    return depth


# What ComfyUI's frontend (LiteGraph in comfyui_frontend_package 1.27) draws: LGraphNode.computeSize and
# drawTitleText, BaseWidget.drawTruncatingText, the DOM textarea of multiline STRING widgets, LGraphGroup.
TITLE_HEIGHT = 30                 # NODE_TITLE_HEIGHT; the title bar is drawn above pos[1]
SLOT_HEIGHT = 20                  # NODE_SLOT_HEIGHT
SLOT_START = 6                    # slot_start_y of ComfyUI's node classes
WIDGET_ROW = 20 + 4               # NODE_WIDGET_HEIGHT and the spacing computeSize adds to each widget
WIDGETS_MARGIN = 8
TITLE_FONT_PX, TEXT_FONT_PX = 14, 12            # Arial: the title; slot labels and widget text
TITLE_TEXT_ROOM = 2 * TITLE_HEIGHT              # drawTitleText truncates the title to width - 2 * title height
WIDGET_LABEL_ROOM = 42 + 2 * (15 + 6 + 10)      # minValueWidth + 2 * (margin + arrowMargin + arrowWidth)
WIDGET_TEXT_ROOM = 4 * 15 + 5 + 20 + 5          # drawTruncatingText: margins, left/right padding, label-value gap
MIN_WIDTH, MIN_WIDTH_WITH_WIDGETS = 140, 210    # NODE_WIDTH, NODE_WIDTH * 1.5
MIN_WIDTH_WITH_TEXTAREA = 320     # room to edit a prompt
TEXTAREA_CHAR, TEXTAREA_LINE, TEXTAREA_PAD = 6.03, 11, 4   # textareas: 10px monospace, 2px padding
TEXTAREA_MARGIN = 20              # node width - textarea width
TEXTAREA_ROOM = 20                # widget height - textarea height, with a little to spare
TEXTAREA_MIN = 100
IMAGE_PREVIEW = 220 + 4           # ImagePreviewWidget minHeight: room for the picture a node shows after a run
GROUP_FONT_SIZE = 24
GROUP_TITLE_HEIGHT = 34           # LGraphGroup.titleHeight = font_size * 1.4

# The layout: columns by graph depth, one band of columns per group.
COLUMN_GAP = 60
GROUP_PAD = 20                    # between a group's edge and its nodes (the title band comes on top of it)
GROUP_GAP = 50                    # between two groups
BAND_GAP = 2 * GROUP_PAD + GROUP_GAP   # between the last column of a group and the first of the next
ROW_GAP = 40                      # between a node and the title bar of the node below (leaves room for badges)
LANE_CLEARANCE = 30               # between a node and a link passing by (room for the badge above a title)
LANE_SPACING = 16                 # between two links passing through a column
NOTE_GAP = 40
NOTE_WIDTH = (700, 1200)          # the note spans the graph, within these bounds
ORDER_SWEEPS = 12
# What a layout costs (_Drawing.cost), in px of the links' slopes and the heights of the graph and its bands.
HIDDEN_COST, CROSSING_COST = 2000, 800    # a link behind a node or over a group's title; two links crossing
HIDDEN_MARGIN = 12               # how near a link may pass a node
SEARCH_ROUNDS, CLEAR_STEPS = 6, 6
VIEW = (1800, 950)                # the screen the saved view ("extra.ds") fits the graph to, zoom 0.6-1

# Groups in reading order; a node's group comes from its class (a loader, a text encoder, ...).
GROUPS = (("Load models", "#3f789e"), ("Prompt", "#8A8"), ("Control", "#b06634"), ("Sample", "#a1309b"),
          ("Decode and save", "#88A"))

_ARIAL_CHARS = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
_ARIAL_WIDTHS = (278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, *[556] * 10,
                 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556,
                 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
                 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333,
                 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)
ARIAL_ADVANCE = dict(zip(_ARIAL_CHARS, _ARIAL_WIDTHS))   # per 1000 em (Arial / Liberation Sans)


def text_width(text: str, px: float) -> float:
    """Width of `text` in Arial at `px` pixels, without kerning; other characters count 0.6 em."""
    return sum(ARIAL_ADVANCE.get(ch, 600) for ch in text) * px / 1000


def textarea_height(text: str, width: float) -> int:
    """Height of a textarea `width` wide that shows `text` without scrolling (plus one line)."""
    per_line = max(1, int((width - TEXTAREA_MARGIN - 2 * TEXTAREA_PAD) / TEXTAREA_CHAR))
    lines = sum(max(1, len(textwrap.wrap(p, per_line, break_on_hyphens=False))) for p in text.split("\n"))
    return max(TEXTAREA_MIN, (lines + 1) * TEXTAREA_LINE + 2 * TEXTAREA_PAD)


@dataclass
class Widget:
    label: str
    value: str = ""
    kind: str = "value"           # "value" (combo, number, toggle, one-line text), "button", "textarea"


@dataclass
class NodeFace:
    """What the frontend draws for a node: the title, the input and output slots, the widgets."""
    title: str
    inputs: list[str]
    outputs: list[str]
    widgets: list[Widget] = field(default_factory=list)
    image_preview: bool = False

    def min_width(self) -> int:
        ins = max((text_width(n, TEXT_FONT_PX) for n in self.inputs), default=0)
        outs = max((text_width(n, TEXT_FONT_PX) for n in self.outputs), default=0)
        width = max(text_width(self.title, TITLE_FONT_PX) + TITLE_TEXT_ROOM,
                    ins + outs + 2 * SLOT_HEIGHT + (5 if ins and outs else 0),
                    MIN_WIDTH_WITH_WIDGETS if self.widgets else MIN_WIDTH,
                    MIN_WIDTH_WITH_TEXTAREA if any(w.kind == "textarea" for w in self.widgets) else 0)
        for w in self.widgets:
            label = text_width(w.label, TEXT_FONT_PX)
            width = max(width, label + WIDGET_LABEL_ROOM)
            if w.kind == "value":
                width = max(width, label + text_width(w.value, TEXT_FONT_PX) + WIDGET_TEXT_ROOM)
        return math.ceil(width / 10) * 10

    def height(self, width: float) -> int:
        """The body's height (the title bar comes on top) at `width`."""
        height = SLOT_START + max(len(self.inputs), len(self.outputs), 1) * SLOT_HEIGHT
        if self.widgets:
            height += WIDGETS_MARGIN + sum(textarea_height(w.value, width) + TEXTAREA_ROOM
                                           if w.kind == "textarea" else WIDGET_ROW for w in self.widgets)
        if self.image_preview:
            height += IMAGE_PREVIEW
        return math.ceil(height)

    def input_y(self, name: str) -> float:
        i = self.inputs.index(name) if name in self.inputs else 0
        return SLOT_START + (i + 0.7) * SLOT_HEIGHT

    def output_y(self, slot: int) -> float:
        return SLOT_START + (slot + 0.7) * SLOT_HEIGHT


def class_group(class_type: str) -> str | None:
    """The group (GROUPS) a node of this class goes in, if its class says."""
    if class_type.endswith("Loader"):
        return "Load models"
    if class_type.endswith(("TextEncode", "Conditioning")) or class_type.startswith("Conditioning"):
        return "Prompt"
    if "ControlNet" in class_type or any(w in class_type for w in ("HED", "Canny", "Lineart", "Depth", "Segment")):
        return "Control"
    if any(word in class_type for word in ("Sampler", "Schedule", "Latent")):
        return "Sample"
    if "Decode" in class_type or class_type.startswith(("Save", "Preview")):
        return "Decode and save"
    return None


def _bands(api: dict, preds: dict, succs: dict, topo: list[str]) -> dict[str, int]:
    """Each node's band: the index of its group in GROUPS (len(GROUPS): no group). A node of no group's class
    joins its consumers' earliest group (else its producers' latest); a producer is moved to the band of a
    consumer that comes before it, so every link runs to the same or a later band."""
    rank = {name: i for i, (name, _) in enumerate(GROUPS)}
    group = {n: class_group(api[n]["class_type"]) for n in api}
    for n in reversed(topo):
        if group[n] is None and any(group[c] for c in succs[n]):
            group[n] = min((group[c] for c in succs[n] if group[c]), key=rank.get)
    for n in topo:
        if group[n] is None and any(group[p] for p in preds[n]):
            group[n] = max((group[p] for p in preds[n] if group[p]), key=rank.get)
    band = {n: rank[group[n]] if group[n] else len(GROUPS) for n in api}
    for n in reversed(topo):
        band[n] = min([band[n], *(band[c] for c in succs[n])])
    return band


def _columns(band: dict, preds: dict, succs: dict, topo: list[str]) -> dict[str, int]:
    """Columns by depth, band after band; within a band a node moves right up to its first consumer (a node
    whose output leaves the band, or a sink, to the band's last column)."""
    column: dict[str, int] = {}
    first = 0
    for b in sorted(set(band.values())):
        members = [n for n in topo if band[n] == b]
        for n in members:
            column[n] = max([first, *(column[p] + 1 for p in preds[n])])
        last = max(column[n] for n in members)
        for n in reversed(members):
            targets = [column[c] - 1 for c in succs[n] if band[c] == b]
            if len(targets) < len(succs[n]) or not succs[n]:
                targets.append(last)
            column[n] = max(column[n], min(targets))
        first = last + 1
    return column


def link_curve(start: tuple[float, float], end: tuple[float, float], steps: int = 24) -> list[tuple[float, float]]:
    """Points, left to right, on the spline the frontend draws for a link from an output at `start` to an input
    at `end` (LinkConnector's calculateControlPoints)."""
    control = max(30.0, math.dist(start, end) * 0.25)
    (x0, y0), (x3, y3) = start, end
    x1, x2 = x0 + control, x3 - control
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3
        points.append((a * x0 + b * x1 + c * x2 + d * x3, (a + b) * y0 + (c + d) * y3))
    return points


def _height_at(curve: list[tuple[float, float]], x: float) -> float:
    """y of a link's curve (points left to right) at x, between the nearest points."""
    i = min(max(bisect.bisect_left(curve, (x, -math.inf)), 1), len(curve) - 1)
    (xa, ya), (xb, yb) = curve[i - 1], curve[i]
    return ya if xb == xa else ya + (yb - ya) * (x - xa) / (xb - xa)


def _curves_cross(a: list, b: list, samples: int = 24) -> bool:
    """Whether two links' curves cross: which one is above changes where both run."""
    left, right = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if right <= left:
        return False
    above = set()
    for k in range(samples + 1):
        x = left + (right - left) * k / samples
        d = _height_at(a, x) - _height_at(b, x)
        if abs(d) > 1:
            above.add(d > 0)
    return len(above) == 2


def _rect_gap(a, b) -> float:
    """How far apart two [x, y, w, h] rectangles are (negative: they overlap)."""
    return max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]), b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]))


class _Rows:
    """Where the items of each column go, top to bottom: Sugiyama's method with Brandes and Koepf's placement.

    A column holds its nodes (str) and a waypoint ((link, column)) for each link that passes through it;
    pieces are the links between neighbouring columns, (upper item, its port, lower item, its port) with the
    ports measured down from the items' tops. Heights are the nodes' with their title bars, 0 for waypoints."""

    def __init__(self, order: list[list], height: dict, pieces: list[tuple]):
        self.order, self.height = order, height
        self.ups: dict = {item: [] for column in order for item in column}
        self.downs: dict = {item: [] for column in order for item in column}
        for a, port_a, b, port_b in pieces:
            self.ups[b].append((a, port_a, port_b))
            self.downs[a].append((b, port_a, port_b))

    def gap(self, a, b) -> float:
        """The least room between two items one above the other."""
        return (LANE_SPACING, LANE_CLEARANCE, ROW_GAP)[isinstance(a, str) + isinstance(b, str)]

    def crossings(self) -> int:
        """How many pieces cross (ports compared in their order down an item)."""
        index = {item: i for column in self.order for i, item in enumerate(column)}
        total = 0
        for column in self.order[1:]:
            ends = [(index[a] + pa / (self.height[a] + 1), index[b] + pb / (self.height[b] + 1))
                    for b in column for a, pa, pb in self.ups[b]]
            total += sum(1 for i, (a1, b1) in enumerate(ends) for a2, b2 in ends[i + 1:] if (a1 - a2) * (b1 - b2) < 0)
        return total

    def sort(self, sweeps: int):
        """Barycentre sweeps, left to right and back; keeps the order with the fewest crossings."""
        best, fewest = [list(column) for column in self.order], self.crossings()
        for sweep in range(sweeps):
            forward = sweep % 2 == 0
            index = {item: i for column in self.order for i, item in enumerate(column)}
            for c in (range(1, len(self.order)) if forward else range(len(self.order) - 2, -1, -1)):
                key = {}
                for v in self.order[c]:
                    near = ([index[a] + pa / (self.height[a] + 1) for a, pa, _ in self.ups[v]] if forward else
                            [index[b] + pb / (self.height[b] + 1) for b, _, pb in self.downs[v]])
                    key[v] = sum(near) / len(near) if near else index[v]
                self.order[c].sort(key=lambda v: key[v])
                index.update({item: i for i, item in enumerate(self.order[c])})
            crossings = self.crossings()
            if crossings < fewest:
                best, fewest = [list(column) for column in self.order], crossings
        self.order[:] = best

    def place(self, flip: bool, downstream: bool) -> dict:
        """Tops of all items by one of Brandes and Koepf's four alignments: each item in line with its median
        neighbour upstream (or downstream), the columns read from the top (or, flip, from the bottom), so that
        the aligned items draw their links level; then the runs of aligned items packed as close as they go."""
        order = [column[::-1] for column in self.order] if flip else self.order
        index = {item: i for column in order for i, item in enumerate(column)}

        def port(item, y):
            return self.height[item] - y if flip else y

        def neighbours(v) -> list[tuple]:     # (neighbour, its port, v's port)
            if downstream:
                return [(b, port(b, pb), port(v, pa)) for b, pa, pb in self.downs[v]]
            return [(a, port(a, pa), port(v, pb)) for a, pa, pb in self.ups[v]]

        columns = list(range(len(order)))[::-1] if downstream else list(range(len(order)))
        aligned: dict = {}                    # item -> (neighbour, offset of its top from the neighbour's)
        taken = set()
        for c in columns[1:]:
            # Pieces between two waypoints keep long links straight: no alignment may cross one.
            inner = [(index[a], index[v]) for v in order[c] if not isinstance(v, str)
                     for a, _, _ in neighbours(v) if not isinstance(a, str)]
            last = -1
            for v in order[c]:
                near = sorted(neighbours(v), key=lambda n: (index[n[0]], n[1]))
                for m in sorted({(len(near) - 1) // 2, len(near) // 2}) if near else ():
                    a, port_a, port_v = near[m]
                    crosses = any((index[a] - x) * (index[v] - y) < 0 for x, y in inner)
                    if v in aligned or a in taken or index[a] <= last or crosses:
                        continue
                    aligned[v] = (a, port_a - port_v)
                    taken.add(a)
                    last = index[a]
        root, offset = {}, {}
        for c in columns:
            for item in order[c]:
                a, shift = aligned.get(item, (None, 0.0))
                root[item], offset[item] = (root[a], offset[a] + shift) if a is not None else (item, 0.0)
        # A run sits below everything above any of its items (a longest path over the runs).
        below: dict = {r: [] for r in dict.fromkeys(root.values())}
        for column in order:
            for a, b in zip(column, column[1:]):
                below[root[a]].append((root[b], offset[a] + self.height[a] + self.gap(a, b) - offset[b]))
        start = dict.fromkeys(below, 0.0)
        for _ in range(len(below)):
            changed = False
            for r, lower in below.items():
                for s, need in lower:
                    if start[s] < start[r] + need - 1e-9:
                        start[s], changed = start[r] + need, True
            if not changed:
                break
        top = {item: start[root[item]] + offset[item] for item in root}
        return {item: -(y + self.height[item]) for item, y in top.items()} if flip else top


class _Drawing:
    """A layout as the frontend draws it, to compare placements: the links' curves, what they run behind or
    cross, how level they are, how tall the graph and its bands are."""

    def __init__(self, links: list[tuple], boxes: dict, titles: list[tuple], bands: list[list[str]]):
        self.links = links        # (source, target, x of the output, its port, x of the input, its port)
        self.boxes = boxes        # node -> (left, right, height with the title bar)
        self.titles = titles      # (band's nodes, left, right) of the groups' titles
        self.bands = bands
        self.curves: dict = {}
        self.crossed: dict = {}

    def curve(self, i: int, top: dict) -> tuple[tuple, list]:
        src, dst, x0, y0, x1, y1 = self.links[i]
        key = (i, round(top[src], 1), round(top[dst], 1))
        if key not in self.curves:
            self.curves[key] = link_curve((x0, key[1] + y0), (x1, key[2] + y1))
        return key, self.curves[key]

    def hidden(self, top: dict) -> list[tuple[str, float, float]]:
        """The nodes a link runs behind, each with the stretch of it the link crosses, top to bottom."""
        found = []
        for i, (src, dst, x0, y0, x1, y1) in enumerate(self.links):
            low, high = sorted((top[src] + y0, top[dst] + y1))
            for n, (left, right, tall) in self.boxes.items():
                upper, lower = top[n] - HIDDEN_MARGIN, top[n] + tall + HIDDEN_MARGIN
                if n in (src, dst) or right < x0 or left > x1 or upper > high or lower < low:
                    continue
                points = self.curve(i, top)[1]
                ys = [y for x, y in points if left <= x <= right]
                ys += [_height_at(points, x) for x in (left, right) if x0 <= x <= x1]
                if ys and min(ys) <= lower and max(ys) >= upper:
                    found.append((n, min(ys), max(ys)))
        return found

    def over_titles(self, top: dict) -> int:
        """How many times a link runs over a group's title."""
        count = 0
        for members, left, right in self.titles:
            bottom = min(top[n] for n in members) - GROUP_PAD
            for i, (_, _, x0, _, x1, _) in enumerate(self.links):
                if x0 <= right and x1 >= left:
                    count += any(left <= x <= right and bottom - GROUP_TITLE_HEIGHT <= y <= bottom
                                 for x, y in self.curve(i, top)[1])
        return count

    def crossings(self, top: dict) -> int:
        drawn = [self.curve(i, top) for i in range(len(self.links))]
        spans = [sorted((top[src] + y0, top[dst] + y1)) for src, dst, _, y0, _, y1 in self.links]
        count = 0
        for i, (_, _, xa0, _, xa1, _) in enumerate(self.links):
            for j in range(i + 1, len(self.links)):
                _, _, xb0, _, xb1, _ = self.links[j]
                if xa1 < xb0 or xb1 < xa0 or spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]:
                    continue
                key = (drawn[i][0], drawn[j][0])
                if key not in self.crossed:
                    self.crossed[key] = _curves_cross(drawn[i][1], drawn[j][1])
                count += self.crossed[key]
        return count

    def cost(self, top: dict) -> float:
        """Lower is better."""
        slopes = sum(abs(top[src] + y0 - top[dst] - y1) for src, dst, _, y0, _, y1 in self.links)
        heights = [max(top[n] + self.boxes[n][2] for n in nodes) - min(top[n] for n in nodes)
                   for nodes in [[n for band in self.bands for n in band], *self.bands]]
        return (HIDDEN_COST * (len(self.hidden(top)) + self.over_titles(top)) + CROSSING_COST * self.crossings(top)
                + slopes + sum(heights))

    def clear(self, top: dict, columns: list[list[str]]) -> dict:
        """Moves the nodes links run behind out of their way, up or down, whichever is shorter, and the nodes
        below (above) them in their column along."""
        top = dict(top)
        where = {n: (nodes, i) for nodes in columns for i, n in enumerate(nodes)}
        for _ in range(CLEAR_STEPS):
            found = self.hidden(top)
            if not found:
                break
            n, low, high = found[0]
            nodes, i = where[n]
            tall = self.boxes
            down = high + LANE_CLEARANCE - top[n]
            up = low - LANE_CLEARANCE - tall[n][2] - top[n]
            if abs(down) <= abs(up):
                top[n] += down
                for a, b in zip(nodes[i:], nodes[i + 1:]):
                    top[b] = max(top[b], top[a] + tall[a][2] + ROW_GAP)
            else:
                top[n] += up
                for a, b in zip(nodes[i::-1], nodes[i - 1::-1] if i else []):
                    top[b] = min(top[b], top[a] - ROW_GAP - tall[b][2])
        return top


def layout(api: dict, faces: dict[str, NodeFace], links: list[tuple[str, int, str, str]], topo: list[str]):
    """Positions and sizes for the nodes and the groups around them.

    links are (source, output slot, target, input name). Columns by depth, one band of columns per group
    (GROUPS), each column as wide as its widest node. In the columns, the orders and placements of _Rows: the
    best one as drawn (_Drawing.cost), each also with its nodes moved out of the way of the links, and then a
    local search over the orders (an item moved to another place in its column). Returns ({node: [x, y]},
    {node: [w, h]}, groups) in LiteGraph's terms: pos is the top left of the body, the title bar above it."""
    if not api:
        return {}, {}, []
    preds = {n: [] for n in api}
    succs = {n: [] for n in api}
    for src, _, dst, _ in links:
        preds[dst].append(src)
        succs[src].append(dst)
    band = _bands(api, preds, succs, topo)
    column = _columns(band, preds, succs, topo)
    count = max(column.values()) + 1
    widths = [max(faces[n].min_width() for n in api if column[n] == c) for c in range(count)]
    xs = [0.0]
    for c in range(1, count):
        same_band = band[next(n for n in api if column[n] == c)] == band[next(n for n in api if column[n] == c - 1)]
        xs.append(xs[-1] + widths[c - 1] + (COLUMN_GAP if same_band else BAND_GAP))
    size = {n: [widths[column[n]], faces[n].height(widths[column[n]])] for n in api}
    height = {n: size[n][1] + TITLE_HEIGHT for n in api}

    order: list[list] = [[n for n in topo if column[n] == c] for c in range(count)]
    heights: dict = dict(height)
    pieces, drawn_links = [], []
    for i, (src, slot, dst, name) in enumerate(links):
        out_port, in_port = TITLE_HEIGHT + faces[src].output_y(slot), TITLE_HEIGHT + faces[dst].input_y(name)
        chain = [src, *((i, c) for c in range(column[src] + 1, column[dst])), dst]
        for waypoint in chain[1:-1]:
            order[waypoint[1]].append(waypoint)
            heights[waypoint] = 0.0
        for a, b in zip(chain, chain[1:]):
            pieces.append((a, out_port if a == src else 0.0, b, in_port if b == dst else 0.0))
        drawn_links.append((src, dst, xs[column[src]] + widths[column[src]] - 9, out_port, xs[column[dst]] + 10,
                            in_port))
    rows = _Rows(order, heights, pieces)
    rows.sort(ORDER_SWEEPS)
    bands = [[n for n in api if band[n] == b] for b in sorted(set(band.values()))]
    titles = [(members, xs[min(column[n] for n in members)] - GROUP_PAD,
               xs[min(column[n] for n in members)] + text_width(GROUPS[band[members[0]]][0], GROUP_FONT_SIZE))
              for members in bands if band[members[0]] < len(GROUPS)]
    drawing = _Drawing(drawn_links, {n: (xs[column[n]], xs[column[n]] + widths[column[n]], height[n]) for n in api},
                       titles, bands)

    def best_placement() -> tuple[float, dict]:
        tops = [rows.place(flip, downstream) for flip in (False, True) for downstream in (False, True)]
        tops.append({item: sum(t[item] for t in tops) / len(tops) for item in tops[0]})
        ranked = sorted(((drawing.cost(t), i, t) for i, t in enumerate(tops)), key=lambda r: r[:2])
        nodes = [[n for n in items if isinstance(n, str)] for items in rows.order]
        cleared = [drawing.clear(t, nodes) for _, _, t in ranked[:2]]
        ranked += [(drawing.cost(t), len(tops) + i, t) for i, t in enumerate(cleared)]
        cost, _, top = min(ranked, key=lambda r: r[:2])
        return cost, top

    best, top = best_placement()
    for _ in range(SEARCH_ROUNDS):
        improved = False
        for items in rows.order:
            for item in list(items):
                start = items.index(item)
                for place in range(len(items)):
                    if place == start:
                        continue
                    items.insert(place, items.pop(start))
                    cost, placed = best_placement()
                    if cost < best - 0.5:
                        best, top, improved, start = cost, placed, True, place
                    else:
                        items.insert(start, items.pop(place))
        if not improved:
            break

    lowest = min(top[n] for n in api)
    pos = {n: [round(xs[column[n]]), round(top[n] - lowest) + TITLE_HEIGHT] for n in api}
    rects = {n: [pos[n][0], pos[n][1] - TITLE_HEIGHT, size[n][0], height[n]] for n in api}
    groups = []
    for members in bands:
        if band[members[0]] >= len(GROUPS):
            continue
        title, color = GROUPS[band[members[0]]]
        x0 = min(rects[n][0] for n in members) - GROUP_PAD
        y0 = min(rects[n][1] for n in members) - GROUP_PAD - GROUP_TITLE_HEIGHT
        x1 = max(rects[n][0] + rects[n][2] for n in members) + GROUP_PAD
        y1 = max(rects[n][1] + rects[n][3] for n in members) + GROUP_PAD
        bounding = [x0, y0, x1 - x0, y1 - y0]
        others = [rects[n] for n in api if n not in members] + [g["bounding"] for g in groups]
        if all(_rect_gap(bounding, r) > 0 for r in others):
            groups.append({"title": title, "bounding": bounding, "color": color, "font_size": GROUP_FONT_SIZE,
                           "flags": {}})
    return pos, size, groups


def _display(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def api_to_ui(api: dict, node_classes: dict, display_names: dict | None = None, note: str | None = None) -> dict:
    """A UI-format graph with the same nodes, links and widget values, laid out left to right: columns by depth,
    groups of columns (GROUPS), nodes sized as the frontend draws them, the note on top."""
    ids = {nid: i + 1 for i, nid in enumerate(api)}
    depth = _layers(api)
    nodes, links = [], []
    faces: dict[str, NodeFace] = {}
    graph_links: list[tuple[str, int, str, str]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, node in api.items():
        for v in node["inputs"].values():
            if _is_link(v):
                out_links.setdefault((v[0], v[1]), [])
    order = sorted(api, key=lambda n: depth[n])
    for index, nid in enumerate(order):
        node = api[nid]
        cls = node_classes[node["class_type"]]
        inputs, widgets, face_widgets = [], [], []
        image_preview = False
        for slot_name, type_, opts in input_specs(cls):
            value = node["inputs"].get(slot_name, opts.get("default"))
            widget = is_widget(type_)
            if widget:
                kind = "textarea" if type_ == "STRING" and opts.get("multiline") else "value"
                face_widgets.append(Widget(slot_name, _display(opts.get("default") if _is_link(value) else value),
                                           kind))
                if has_seed_control(slot_name, type_, opts):
                    face_widgets.append(Widget("control after generate", "fixed"))
                if opts.get("image_upload"):
                    face_widgets.append(Widget("choose file to upload", kind="button"))
                    image_preview = True
            if _is_link(value):
                link_id = len(links) + 1
                src = value[0]
                src_cls = node_classes[api[src]["class_type"]]
                link_type = src_cls.RETURN_TYPES[value[1]]
                links.append([link_id, ids[src], value[1], ids[nid], len(inputs), link_type])
                graph_links.append((src, value[1], nid, slot_name))
                out_links[(src, value[1])].append(link_id)
                entry = {"name": slot_name, "type": "COMBO" if isinstance(type_, list) else type_, "link": link_id}
                if widget:
                    entry["widget"] = {"name": slot_name}
                inputs.append(entry)
                if widget:
                    widgets.append(opts.get("default"))
            elif widget:
                widgets.append(value)
                if has_seed_control(slot_name, type_, opts):
                    widgets.append("fixed")
            elif slot_name in node["inputs"] or not opts.get("optional", False):
                inputs.append({"name": slot_name, "type": type_, "link": None})
        outputs = []
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        for slot, rtype in enumerate(cls.RETURN_TYPES):
            outputs.append({"name": names[slot], "type": rtype, "links": [], "slot_index": slot})
        entry = {"id": ids[nid], "type": node["class_type"], "pos": [0, 0], "size": [0, 0], "flags": {},
                 "order": index, "mode": 0, "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        display_name = (display_names or {}).get(node["class_type"], node["class_type"])
        title = node.get("_meta", {}).get("title")
        if title and title != display_name:
            entry["title"] = title
        if getattr(cls, "OUTPUT_NODE", False) and any(i["type"] == "IMAGE" for i in inputs):
            image_preview = True
        faces[nid] = NodeFace(title or display_name, [i["name"] for i in inputs if "widget" not in i],
                              [o["name"] for o in outputs], face_widgets, image_preview)
        nodes.append(entry)
    pos, size, groups = layout(api, faces, graph_links, order)
    by_id = {n["id"]: n for n in nodes}
    for nid in api:
        by_id[ids[nid]]["pos"], by_id[ids[nid]]["size"] = pos[nid], size[nid]
    for link in links:
        by_id[link[1]]["outputs"][link[2]]["links"].append(link[0])
    boxes = [[p[0], p[1] - TITLE_HEIGHT, s[0], s[1] + TITLE_HEIGHT] for p, s in zip(pos.values(), size.values())]
    boxes += [g["bounding"] for g in groups]
    left, top = min((b[0] for b in boxes), default=0), min((b[1] for b in boxes), default=0)
    right = max((b[0] + b[2] for b in boxes), default=0)
    bottom = max((b[1] + b[3] for b in boxes), default=0)
    if note:
        face = NodeFace("Model files", [], [], [Widget("text", note, "textarea")])
        width = min(max(right - left, NOTE_WIDTH[0]), NOTE_WIDTH[1])
        height = face.height(width)
        note_pos = [left, top - NOTE_GAP - height]
        nodes.append({"id": len(nodes) + 1, "type": "Note", "pos": note_pos, "size": [width, height], "flags": {},
                      "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "title": "Model files",
                      "properties": {}, "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
        top = note_pos[1] - TITLE_HEIGHT
        right = max(right, left + width)
    scale = max(0.6, min(1.0, VIEW[0] / (right - left + 80), VIEW[1] / (bottom - top + 80)))
    scale = round(scale, 3)
    view = {"scale": scale, "offset": [round(40 / scale - left), round(40 / scale - top)]}
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": groups, "config": {}, "extra": {"ds": view}, "version": 0.4}


def ui_to_api(ui: dict, node_classes: dict) -> dict:
    """What ComfyUI's frontend queues for a UI graph: class types, widget values by name, links."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == 4:
            continue
        cls = node_classes[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {}
        for slot_name, type_, opts in input_specs(cls):
            widget = is_widget(type_)
            if widget:
                value = values.pop(0) if values else None
                if has_seed_control(slot_name, type_, opts) and values:
                    values.pop(0)
            if slot_name in linked:
                link = links[linked[slot_name]]
                inputs[slot_name] = [str(link[1]), link[2]]
            elif widget:
                inputs[slot_name] = value
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def canonical(api: dict) -> dict:
    """Renumbers nodes in a stable order so graphs with different ids compare equal."""
    order = sorted(api, key=lambda n: (api[n]["class_type"], json.dumps(
        {k: v for k, v in api[n]["inputs"].items() if not _is_link(v)}, sort_keys=True)))
    new = {old: str(i + 1) for i, old in enumerate(order)}
    out = {}
    for old in order:
        inputs = {k: ([new[v[0]], v[1]] if _is_link(v) else v) for k, v in api[old]["inputs"].items()}
        out[new[old]] = {"class_type": api[old]["class_type"], "inputs": inputs}
    return out


def write_ui_workflow(api_path: Path, ui_path: Path, node_classes: dict, display_names: dict, note: str | None):
    api = json.loads(Path(api_path).read_text())
    ui = api_to_ui(api, node_classes, display_names, note)
    Path(ui_path).write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")
    return ui
