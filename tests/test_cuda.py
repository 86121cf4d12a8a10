"""What only a GPU can check: the CUDA side of the speed work. Skipped without CUDA (CI); run by
`benchmarks/gpu_check.sh` on a lent GPU. Each test has a CPU-side twin in test_backbones,
test_gaussian, test_loader or test_scoring."""

import numpy as np
import pytest
import torch

from padim_utils import backbones as bb
from padim_utils.config import preset
from padim_utils.datasets.images import resize_crop_images
from padim_utils.gaussian import GaussianStats, scatter_dtype
from padim_utils.model import Padim

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_padim_on_cuda_takes_the_policy_layout_and_both_layouts_agree(backbone):
    cfg = preset("quick").replace(device="cuda", backbone=backbone, layers=None, d=32,
                                  pretrained=backbone == "efficientnet_lite0")
    torch.manual_seed(0)
    model = Padim(cfg)
    assert model.extractor.channels_last == bb.prefers_channels_last(backbone, "cuda")
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    a = model.forward_layers(images)
    model.extractor.use_channels_last(not model.extractor.channels_last)
    for x, y in zip(model.forward_layers(images), a):  # cuDNN may use TF32: a looser bound than the CPU's
        torch.testing.assert_close(x, y, rtol=1e-2, atol=2e-3 * float(y.abs().max()))


def test_float32_products_on_cuda_equal_float64():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(300, 24, 4, 4, generator=g) @ torch.randn(1, 1, 4, 4, generator=g) * 3 + 50).cuda()
    stats = {}
    for dtype in ("float64", "float32"):
        stats[dtype] = GaussianStats(16, 24, "cuda", chunk=7, dtype=dtype)
        for s in range(0, 300, 64):
            stats[dtype].update(x[s : s + 64])
    ref, got = stats["float64"].covariance(), stats["float32"].covariance()
    err = (got - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    assert float(err.max()) < 1e-6
    assert scatter_dtype("cuda") in (torch.float64, torch.float32)


def test_finalize_on_cuda_never_holds_scatter_and_precision_whole():
    positions, d = 1024, 256  # scatter 512 MiB in float64, precision 256 MiB in float32
    stats = GaussianStats(positions, d, "cuda", chunk=128)
    g = torch.Generator(device="cuda").manual_seed(0)
    stats.update(torch.randn(300, d, 32, 32, device="cuda", generator=g))
    scatter = positions * d * d * 8
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _, precision = stats.finalize(0.01)
    peak = torch.cuda.max_memory_allocated() - base  # above the scatter that was already there
    assert precision.dtype == torch.float32 and precision.nbytes == scatter // 2
    # a chunk's temporaries (~160 MiB): the scatter chunks freed pay for the precision as it grows, where
    # allocating the precision beside the whole scatter costs 256 MiB + temporaries
    assert peak < scatter // 2


def test_loader_workers_and_pinned_batches_on_cuda(quick_root, quick_category):
    from padim_utils.datasets import MVTecDataset

    cfg = preset("quick").replace(device="cuda")
    kw = dict(image_size=64, crop=None, interpolation=cfg.interpolation)
    train = MVTecDataset(quick_root, quick_category, "train", **kw)
    model = Padim(cfg)
    assert model.workers >= 1
    batches = list(model.loader(train))
    assert all(b["image"].is_pinned() for b in batches)
    assert torch.equal(torch.cat([b["image"] for b in batches]), torch.stack([train[i]["image"] for i in range(len(train))]))


def test_resize_on_cuda_equals_the_cpu_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 300, 300), generator=g, dtype=torch.uint8)
    for interpolation in ("bicubic", "bilinear"):
        cpu = resize_crop_images(x, 256, 224, interpolation).int()
        gpu = resize_crop_images(x.cuda(), 256, 224, interpolation).cpu().int()
        assert int((cpu - gpu).abs().max()) <= 1


def test_predict_on_cuda_equals_the_cpu(quick_root, quick_category):
    from padim_utils.datasets import MVTecDataset

    cfg = preset("quick").replace(dtype="float64", stats_dtype="float64")
    kw = dict(image_size=64, crop=None, interpolation=cfg.interpolation)
    train = MVTecDataset(quick_root, quick_category, "train", **kw)
    test = MVTecDataset(quick_root, quick_category, "test", **kw)
    out = {dev: Padim(cfg.replace(device=dev)).fit(train, progress=False).predict_dataset(test, progress=False)
           for dev in ("cpu", "cuda")}
    np.testing.assert_allclose(out["cuda"]["maps"].numpy(), out["cpu"]["maps"].numpy(), rtol=1e-5,
                               atol=1e-5 * float(out["cpu"]["maps"].max()))
