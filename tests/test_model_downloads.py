"""The model manifest (workflows/manifest/models.json) and `models --download`, against a hub stand-in on 127.0.0.1
(HF_ENDPOINT), never the internet: a missing file is fetched, a partial one resumes with a Range request, a
sha256 mismatch is refused and the bad file removed. No ComfyUI needed."""
import hashlib
import os
import re
import subprocess
import sys

import pytest

from pixart_delta.tools.cli import bundled_workflows, load_workflow
from pixart_delta.tools.comfy_runtime import PACK_ROOT
from pixart_delta.tools.downloads import (DownloadError, ModelFile, download, file_status, files_for_graph, load_manifest,
                                    weight_names, workflow_section)

from hub_standin import HubStandIn

MANIFEST = load_manifest()


def payload(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


# -- the manifest --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", bundled_workflows())
def test_every_weight_file_of_a_workflow_is_in_the_manifest(name):
    graph = load_workflow(name)
    files, unknown = files_for_graph(graph, MANIFEST)
    assert not unknown, f"{name} names weight files the manifest does not list: {sorted(unknown)}"
    assert {f.name for f in files} >= weight_names(graph)


def test_workflows_section_is_up_to_date():
    graphs = {n: load_workflow(n) for n in bundled_workflows()}
    assert MANIFEST["workflows"] == workflow_section(MANIFEST, graphs), \
        "workflows/manifest/models.json is stale: run `python -m pixart_delta models --write-manifest`"


def test_manifest_entries_are_well_formed():
    folders = {"diffusion_models", "text_encoders", "vae", "vae_approx", "controlnet", "hed", "lineart", "checkpoints",
               "yoso_priors", "loras"}
    folders |= {"depth", "segmentation"}   # transformers model folders (DPT, UperNet)
    folders |= {"customnet"}               # PixArt CustomNet Loader's own folder
    for f in MANIFEST["files"].values():
        assert f.folder in folders, f.target
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", f.repo), f.target
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.target
        assert f.size is None or (isinstance(f.size, int) and f.size > 0), f.target
        assert all(t in MANIFEST["files"] for t in f.with_), f.target
    hed = MANIFEST["files"]["hed/ControlNetHED.pth"]  # the one file whose size and hash are published
    assert (hed.size, hed.sha256) == (29444406, "5ca93762ffd68a29fee1af9d495bf6aab80ae86f08905fb35472a083a4c7a8fa")


def test_controlnet_plus_plus_files_get_distinct_names():
    """limingcv/reward_controlnet publishes all five ControlNet++ models as
    checkpoints/<condition>/controlnet/diffusion_pytorch_model.safetensors: one download must not overwrite another."""
    rows = [f for f in MANIFEST["files"].values() if f.repo == "limingcv/reward_controlnet"]
    by_condition = {f.path.split("/")[1]: f.target for f in rows}
    assert by_condition == {c: f"controlnet/controlnet_pp_sd15_{c}.safetensors"
                            for c in ("canny", "hed", "lineart", "depth", "seg")}
    assert {f.path.rsplit("/", 1)[1] for f in rows} == {"diffusion_pytorch_model.safetensors"}
    assert len({f.target for f in rows}) == len(rows) == 5


def test_yoso_sd15_lora_is_stored_under_a_pickle_name():
    """The published yoso_lora.safetensors is a torch pickle: saved as .pt, core's loader opens it with
    torch.load(weights_only=True) instead of failing in safetensors (HeaderTooLarge)."""
    [row] = [f for f in MANIFEST["files"].values() if f.repo == "Luo-Yihong/yoso_sd1.5_lora"]
    assert (row.path, row.target) == ("yoso_lora.safetensors", "loras/yoso_sd15_lora.pt")


def test_companions_come_with_the_t5_shard():
    graph = {"1": {"class_type": "X", "inputs": {"t5_name": "PixArt-T5/model-00001-of-00002.safetensors"}}}
    targets = {f.target for f in files_for_graph(graph, MANIFEST)[0]}
    assert targets == {"text_encoders/PixArt-T5/model-00001-of-00002.safetensors",
                       "text_encoders/PixArt-T5/model-00002-of-00002.safetensors",
                       "text_encoders/PixArt-T5/model.safetensors.index.json",
                       "text_encoders/PixArt-T5/config.json"}


# -- downloads against the stand-in ----------------------------------------------------------------------------

@pytest.fixture
def hub():
    with HubStandIn() as h:
        yield h


def entry(target="vae/test.safetensors", size=None, sha=None):
    return ModelFile(target=target, repo="acme/models", path="weights/test.safetensors", size=size, sha256=sha)


def test_missing_file_is_fetched(hub, tmp_path):
    data = payload(300_000)
    hub.files[("acme/models", "weights/test.safetensors")] = data
    f = entry(size=len(data), sha=hashlib.sha256(data).hexdigest())
    assert file_status(f, tmp_path) == "missing"
    path = download(f, tmp_path, endpoint=hub.url, progress=False)
    assert path == tmp_path / "vae" / "test.safetensors"
    assert path.read_bytes() == data
    assert file_status(f, tmp_path, verify=True) == "present"
    assert hub.gets("acme/models/resolve/main/weights/test.safetensors") == [None]


def test_partial_file_resumes_with_a_range_request(hub, tmp_path):
    data = payload(500_000, seed=1)
    hub.files[("acme/models", "weights/test.safetensors")] = data
    f = entry()  # size and sha256 unknown to the manifest: the hub's announced ones are checked
    part = tmp_path / "vae" / "test.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:123_456])
    assert file_status(f, tmp_path) == "partial"
    path = download(f, tmp_path, endpoint=hub.url, progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert hub.gets("acme/models/resolve/main/weights/test.safetensors") == ["bytes=123456-"]


def test_connection_cut_mid_transfer_resumes(hub, tmp_path):
    from huggingface_hub import constants
    chunk = constants.DOWNLOAD_CHUNK_SIZE  # bytes reach the file a chunk at a time: cut after the first chunk
    data = payload(2 * chunk + 1000, seed=2)
    key = ("acme/models", "weights/test.safetensors")
    hub.files[key] = data
    hub.drop_once[key] = chunk + 5000
    path = download(entry(size=len(data)), tmp_path, endpoint=hub.url, progress=False)
    assert path.read_bytes() == data
    ranges = hub.gets("acme/models/resolve/main/weights/test.safetensors")
    assert ranges[0] is None and len(ranges) == 2 and re.fullmatch(r"bytes=\d+-", ranges[1])
    assert int(ranges[1][6:-1]) == chunk  # resumed after what was written, not from zero


def test_sha256_mismatch_with_the_manifest_is_refused_and_removed(hub, tmp_path):
    data = payload(200_000, seed=3)
    hub.files[("acme/models", "weights/test.safetensors")] = data
    f = entry(size=len(data), sha="0" * 64)
    with pytest.raises(DownloadError, match="sha256"):
        download(f, tmp_path, endpoint=hub.url, progress=False)
    assert not (tmp_path / "vae" / "test.safetensors").exists()
    assert not (tmp_path / "vae" / "test.safetensors.part").exists()


def test_sha256_mismatch_with_the_hub_announcement_is_refused(hub, tmp_path):
    data = payload(200_000, seed=4)
    key = ("acme/models", "weights/test.safetensors")
    hub.files[key] = data
    hub.announced_sha[key] = hashlib.sha256(b"the real file").hexdigest()  # corrupted in transit / on the mirror
    with pytest.raises(DownloadError, match="sha256"):
        download(entry(), tmp_path, endpoint=hub.url, progress=False)
    assert not any((tmp_path / "vae").iterdir())


def test_size_disagreeing_with_the_manifest_is_refused_before_downloading(hub, tmp_path):
    hub.files[("acme/models", "weights/test.safetensors")] = payload(1000)
    with pytest.raises(DownloadError, match="manifest expects 999"):
        download(entry(size=999), tmp_path, endpoint=hub.url, progress=False)
    assert hub.gets("acme/models/resolve/main/weights/test.safetensors") == []


def test_cli_lists_and_downloads_a_workflow(hub, tmp_path):
    """`models --workflow NAME --download` with HF_ENDPOINT at the stand-in: every file lands in its folder."""
    candidates = [n for n in bundled_workflows()
                  if all(f.sha256 is None for f in files_for_graph(load_workflow(n), MANIFEST)[0])]
    if not candidates:
        pytest.skip("every bundled workflow needs a file with a published sha256 the stand-in cannot fake")
    name = candidates[0]
    files = files_for_graph(load_workflow(name), MANIFEST)[0]
    for i, f in enumerate(files):
        hub.files[(f.repo, f.path)] = payload(1000 + 517 * i, seed=i)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    cmd = [sys.executable, "-m", "pixart_delta", "models", "--workflow", name, "--models", str(tmp_path), "--quiet"]
    listing = subprocess.run(cmd, cwd=PACK_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("[missing]") == len(files)
    got = subprocess.run([c for c in cmd if c != "--quiet"] + ["--download"], cwd=PACK_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    for i, f in enumerate(files):
        assert (tmp_path / f.target).read_bytes() == payload(1000 + 517 * i, seed=i), f.target
    again = subprocess.run(cmd, cwd=PACK_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.stdout.count("[present]") == len(files) and "[missing]" not in again.stdout


def test_cli_reports_a_file_the_hub_does_not_have(hub, tmp_path):
    name = bundled_workflows()[0]
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pixart_delta", "models", "--workflow", name, "--models",
                           str(tmp_path), "--download", "--quiet"], cwd=PACK_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and ("NotFound" in proc.stderr or "404" in proc.stderr), proc.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
