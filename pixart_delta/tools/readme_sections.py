"""(maintainers) Prints the README's per-workflow quickstarts and node list, generated from the bundled workflows,
their notes, the model manifest and the nodes' own descriptions:

    python -m pixart_delta.tools.readme_sections > /tmp/sections.md
"""
from __future__ import annotations


from pixart_delta.tools.cli import bundled_workflows, load_workflow
from pixart_delta.tools.comfy_runtime import PACK_ROOT as ROOT, InProcessComfy, require_comfyui
from pixart_delta.tools.downloads import files_for_graph, load_manifest


def first_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    for end in (". ", "; "):
        if end in text:
            return text.split(end)[0] + "."
    return text


def quickstarts() -> str:
    manifest = load_manifest()
    out = ["## Quickstart per workflow", "",
           "Each workflow: fetch its files into ComfyUI's models folder (or place them by hand where the table says), "
           "then drag `example_workflows/NAME.json` into ComfyUI, or queue it on a running server from a shell.", ""]
    for name in bundled_workflows():
        note = ROOT / "workflows" / "notes" / f"{name}.md"
        summary = note.read_text().strip().splitlines()[0] if note.is_file() else ""
        graph = load_workflow(name)
        files, unknown = files_for_graph(graph, manifest)
        out += [f"### `{name}`", "", summary, "", f"![{name}](docs/img/{name}.png)", "",
                "| file (under `ComfyUI/models/`) | from Hugging Face |", "|---|---|"]
        out += [f"| `{f.target}` | `{f.repo}` / `{f.path}` |" for f in files]
        out += [f"| `{u}` | (not in the manifest: see the workflow's note) |" for u in sorted(unknown)]
        images = [(nid, n["inputs"]["image"]) for nid, n in graph.items() if n["class_type"] == "LoadImage"]
        queue = f"python -m pixart_delta queue {name} --server http://127.0.0.1:8188 --out out"
        if len(images) == 1:
            queue += " --image my_picture.png"
        else:
            queue += "".join(f" --image {nid}=my_{image.rsplit('.', 1)[0]}.png" for nid, image in images)
        out += ["", "```", f"python -m pixart_delta models --workflow {name} --download --models ComfyUI/models",
                queue, "```", ""]
        if len(images) == 1:
            out += [f"(`--image` uploads the picture the LoadImage node reads; by hand: put it in ComfyUI/input/ as "
                    f"`{images[0][1]}`.)", ""]
        elif images:
            each = ", ".join(f"node {nid} `{image}`" for nid, image in images)
            out += [f"(`--image NODE=PATH` uploads the picture each LoadImage node reads; by hand: put them in "
                    f"ComfyUI/input/ as {each}.)", ""]
    return "\n".join(out)


def node_list() -> str:
    comfy = InProcessComfy.get(require_comfyui())
    import nodes
    from pixart_delta.nodes import all_nodes
    schemas = sorted((cls.GET_SCHEMA() for cls in all_nodes()), key=lambda s: (s.category or "", s.node_id))
    out = ["## Nodes", "", "| node | category | what it does |", "|---|---|---|"]
    for s in schemas:
        assert s.node_id in comfy.node_classes, f"{s.node_id} is not registered in ComfyUI"
        name = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(s.node_id, s.display_name or s.node_id)
        out.append(f"| {name} (`{s.node_id}`) | {s.category} | {first_sentence(s.description)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(quickstarts())
    print(node_list())
