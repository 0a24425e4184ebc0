"""YOSO informative prior (no ComfyUI): init = per-element mean of the references + one scalar std x N(0, I)."""
import pytest
import torch

from pixart_delta.samplers import prior as ipi


def refs(b=3, c=4, h=8, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g) * 2.5 + torch.linspace(-1, 1, w)


def test_zero_noise_gives_exactly_the_mean():
    r = refs()
    mean, std = ipi.prior_stats(r)
    out = ipi.prior_latent(mean, std, torch.zeros(5, 4, 8, 6))
    expected = (r[0] + r[1] + r[2]) / 3
    assert out.shape == (5, 4, 8, 6)
    torch.testing.assert_close(out, expected.expand(5, -1, -1, -1), rtol=0, atol=1e-6)
    assert torch.equal(out[0], out[4])


def test_std_is_one_scalar_over_all_elements():
    r = refs(b=2)
    _, std = ipi.prior_stats(r)
    flat = r.flatten().double()
    expected = ((flat - flat.mean()) ** 2).sum() / (flat.numel() - 1)   # torch.std's default (unbiased)
    assert std.ndim == 0
    assert float(std) == pytest.approx(float(expected.sqrt()), rel=1e-6)


def test_with_noise_mean_and_std_match_statistically():
    r = refs(b=4, c=4, h=16, w=16)
    mean, std = ipi.prior_stats(r)
    out = ipi.prior_latent(mean, std, ipi.prior_noise(512, mean.shape, seed=11))
    dev = out - r.mean(0)
    # per element: sample mean over 512 draws within 5 standard errors of the reference mean
    assert (dev.mean(0).abs() < 5 * float(std) / 512 ** 0.5).float().mean() > 0.999
    assert float(dev.std()) == pytest.approx(float(r.std()), rel=0.01)
    assert abs(float(dev.mean())) < 0.01 * float(std)


def test_one_reference_is_allowed():
    r = refs(b=1)
    mean, std = ipi.prior_stats(r)
    assert torch.equal(mean, r[0])
    assert float(std) == pytest.approx(float(r.std()))


def test_noise_is_seeded_and_shaped():
    a = ipi.prior_noise(3, (4, 8, 8), seed=5)
    assert a.shape == (3, 4, 8, 8)
    assert torch.equal(a, torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(a, ipi.prior_noise(3, (4, 8, 8), seed=6))


def test_empty_and_mismatched_references_are_clear_errors():
    with pytest.raises(ipi.PriorError, match="empty"):
        ipi.prior_stats(torch.zeros(0, 4, 8, 8))
    with pytest.raises(ipi.PriorError, match="no references"):
        ipi.combine_references([])
    with pytest.raises(ipi.PriorError, match="different sizes.*4x8x8.*4x16x8"):
        ipi.combine_references([("a", torch.zeros(1, 4, 8, 8)), ("b", torch.zeros(2, 4, 16, 8))])
    with pytest.raises(ipi.PriorError, match="shaped"):
        ipi.prior_stats(torch.zeros(4, 8, 8))
    with pytest.raises(ipi.PriorError, match="NaN"):
        ipi.prior_stats(torch.full((1, 4, 2, 2), float("nan")))
    with pytest.raises(ipi.PriorError, match="batch_size"):
        ipi.prior_noise(0, (4, 8, 8), 0)


def test_combined_sources_are_one_batch():
    a, b = refs(b=2, seed=1), refs(b=1, seed=2)
    batch = ipi.combine_references([("a", a), ("b", b)])
    mean, _ = ipi.prior_stats(batch)
    torch.testing.assert_close(mean, (a[0] + a[1] + b[0]) / 3)


def test_save_and_load_reproduce_the_prior(tmp_path):
    r = refs()
    mean, std = ipi.prior_stats(r)
    path = ipi.save_prior(tmp_path / "p.safetensors", mean, std, count=3)
    assert path.stat().st_size < 4096
    m2, s2, meta = ipi.load_prior(path)
    noise = ipi.prior_noise(2, m2.shape, 3)
    expected = r.mean(0) + r.std() * noise
    torch.testing.assert_close(ipi.prior_latent(m2, s2, noise), expected)
    assert meta["format"] == ipi.PRIOR_FORMAT and meta["references"] == "3"


def test_load_rejects_foreign_files(tmp_path):
    import safetensors.torch
    other = tmp_path / "vae.safetensors"
    safetensors.torch.save_file({"decoder.conv_in.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ipi.PriorError, match="vae.safetensors: not a YOSO prior file; found decoder.conv_in.weight"):
        ipi.load_prior(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ipi.PriorError, match="cannot read"):
        ipi.load_prior(junk)
    with pytest.raises(ipi.PriorError, match=".pt file"):
        ipi.load_prior(tmp_path / "x.pt")
