"""The queue client's pure parts (no server, no ComfyUI): error reports name the node, --count seeds, --image plans.
The client against a real ComfyUI server is in test_server.py."""
import pytest

from pixart_delta.tools.client import assign_images, outcome_error, refused_error, set_seed_offset

GRAPH = {
    "1": {"class_type": "PixArtCheckpointLoader", "inputs": {"ckpt_name": "a.pth"}},
    "5": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "6": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "model": ["1", 0]}},
    "7": {"class_type": "SamplerCustom", "inputs": {"noise_seed": 7, "cfg": 1.0}},
    "12": {"class_type": "LoadImage", "inputs": {"image": "y.png"}},
}


def test_refused_prompt_names_each_failing_node():
    # the body ComfyUI's POST /prompt answers with status 400 (server.py / execution.validate_prompt)
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"1": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                              "details": "ckpt_name: 'b.pth' not in ['a.pth']", "extra_info": {}}],
                                  "dependent_outputs": ["9"], "class_type": "PixArtCheckpointLoader"}}}
    err = refused_error(body)
    assert err.node_errors == [("1", "PixArtCheckpointLoader", "Value not in list: ckpt_name: 'b.pth' not in ['a.pth']")]
    assert err.describe() == "node 1 (PixArtCheckpointLoader): Value not in list: ckpt_name: 'b.pth' not in ['a.pth']"


def test_failed_run_reports_node_and_message_from_history():
    # a /history entry of a prompt whose loader raised (main.py task_done with e.status_messages)
    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p"}],
        ["execution_error", {"prompt_id": "p", "node_id": "1", "node_type": "PixArtCheckpointLoader",
                             "exception_message": "x.safetensors: this is a VAE, not a PixArt checkpoint\n",
                             "exception_type": "CheckpointError", "traceback": []}]]}}
    err = outcome_error(entry)
    assert (err.node_id, err.node_type) == ("1", "PixArtCheckpointLoader")
    assert err.describe() == "node 1 (PixArtCheckpointLoader): x.safetensors: this is a VAE, not a PixArt checkpoint"
    assert outcome_error({"status": {"status_str": "success", "completed": True, "messages": []}}) is None


def test_count_variations_add_i_to_every_seed_and_leave_the_original():
    g = set_seed_offset(GRAPH, 3)
    assert g["6"]["inputs"]["seed"] == 45 and g["7"]["inputs"]["noise_seed"] == 10
    assert g["6"]["inputs"]["steps"] == 20 and g["6"]["inputs"]["model"] == ["1", 0]
    assert GRAPH["6"]["inputs"]["seed"] == 42


def test_image_plans(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert assign_images(GRAPH, [str(a)]) == {a: ["5", "12"]}          # one picture feeds every LoadImage
    assert assign_images(GRAPH, [str(a), str(b)]) == {a: ["5"], b: ["12"]}  # several: in node id order
    assert assign_images(GRAPH, [f"12={a}"]) == {a: ["12"]}
    with pytest.raises(ValueError, match="not a LoadImage"):
        assign_images(GRAPH, [f"6={a}"])
    with pytest.raises(ValueError, match="no such file"):
        assign_images(GRAPH, [str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="no LoadImage"):
        assign_images({"6": GRAPH["6"]}, [str(a)])
