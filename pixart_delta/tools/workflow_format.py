"""API-format <-> UI-format (LiteGraph) workflows, using the node definitions of a running ComfyUI.

The bundled workflows are authored in API format (workflows/api/) and the drag-and-drop UI files
(example_workflows/) are generated from them, with a Note node naming the model files; `ui_to_api` does what
ComfyUI's frontend does when it queues a UI graph, so a test can check the two stay in sync.
"""
from __future__ import annotations

import json
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


def api_to_ui(api: dict, node_classes: dict, display_names: dict | None = None, note: str | None = None) -> dict:
    """A UI-format graph with the same nodes, links and widget values; nodes laid out in columns by depth."""
    ids = {nid: i + 1 for i, nid in enumerate(api)}
    depth = _layers(api)
    rows: dict[int, int] = {}
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, node in api.items():
        for v in node["inputs"].values():
            if _is_link(v):
                out_links.setdefault((v[0], v[1]), [])
    order = sorted(api, key=lambda n: depth[n])
    for index, nid in enumerate(order):
        node = api[nid]
        cls = node_classes[node["class_type"]]
        inputs, widgets = [], []
        for slot_name, type_, opts in input_specs(cls):
            value = node["inputs"].get(slot_name, opts.get("default"))
            widget = is_widget(type_)
            if _is_link(value):
                link_id = len(links) + 1
                src = value[0]
                src_cls = node_classes[api[src]["class_type"]]
                link_type = src_cls.RETURN_TYPES[value[1]]
                links.append([link_id, ids[src], value[1], ids[nid], len(inputs), link_type])
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
        col = depth[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        outputs = []
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        for slot, rtype in enumerate(cls.RETURN_TYPES):
            outputs.append({"name": names[slot], "type": rtype, "links": [], "slot_index": slot})
        entry = {"id": ids[nid], "type": node["class_type"], "pos": [60 + 380 * col, 60 + 260 * row],
                 "size": [340, 120 + 26 * len(widgets)], "flags": {}, "order": index, "mode": 0,
                 "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        title = node.get("_meta", {}).get("title")
        if title and title != (display_names or {}).get(node["class_type"], node["class_type"]):
            entry["title"] = title
        nodes.append(entry)
    by_id = {n["id"]: n for n in nodes}
    for link in links:
        by_id[link[1]]["outputs"][link[2]]["links"].append(link[0])
    if note:
        nodes.append({"id": len(nodes) + 1, "type": "Note", "pos": [60, -260], "size": [700, 220], "flags": {},
                      "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "title": "Model files",
                      "properties": {}, "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 300]}}, "version": 0.4}


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
