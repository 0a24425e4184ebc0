"""assign_weights: the read tensors become the module's weights (no second copy of a file's weights while
loading), with the values torch's own copying load_state_dict gives."""
import torch

from pixart_delta.loaders.files import assign_weights


def two_layers(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16, elementwise_affine=True),
                               torch.nn.Linear(16, 4)).to(dtype)


def read_tensors(dtype):
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=g).to(dtype) for k, v in two_layers().state_dict().items()}


def test_same_dtype_tensors_become_the_weights_without_a_copy():
    sd = read_tensors(torch.float32)
    pointers = {k: v.data_ptr() for k, v in sd.items()}
    module = two_layers()
    missing, unexpected = assign_weights(module, sd)
    assert (missing, unexpected) == ([], [])
    assert {k: v.data_ptr() for k, v in module.state_dict().items()} == pointers
    assert all(isinstance(p, torch.nn.Parameter) for p in module.parameters())


def test_values_match_torchs_copying_load_for_every_dtype_pair():
    for file_dtype, module_dtype in ((torch.float32, torch.float32), (torch.float16, torch.float32),
                                     (torch.float32, torch.bfloat16), (torch.bfloat16, torch.float16)):
        sd = read_tensors(file_dtype)
        reference = two_layers(module_dtype)
        reference.load_state_dict(sd)          # torch copies into the module's own dtype
        module = two_layers(module_dtype)
        assign_weights(module, dict(sd))
        for (name, got), want in zip(module.state_dict().items(), reference.state_dict().values()):
            assert got.dtype == module_dtype, (name, file_dtype, module_dtype)
            assert torch.equal(got, want), (name, file_dtype, module_dtype)
        x = torch.randn(3, 8).to(module_dtype)
        assert torch.equal(module(x), reference(x))


def test_missing_and_unexpected_keys_are_reported_like_load_state_dict():
    sd = read_tensors(torch.float32)
    del sd["2.bias"]
    sd["3.weight"] = torch.zeros(2)
    expected = two_layers().load_state_dict(dict(sd), strict=False)
    assert assign_weights(two_layers(), sd) == expected
    assert expected.missing_keys == ["2.bias"] and expected.unexpected_keys == ["3.weight"]
