"""Every loader reads an image file the same way: one reading function, EXIF orientation applied."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import padim_utils
from padim_utils.datasets.images import load_mask, load_rgb, resize_crop
from padim_utils.datasets.mvtec import ImageFolderDataset, MVTecDataset

PACKAGE = Path(padim_utils.__file__).parent
SIZE = 32


def _rotated_jpeg(path: Path, seed: int) -> Path:
    """A 48x32 JPEG whose EXIF says 'rotate 90 degrees on display' (orientation 6): shown 32x48."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    arr[:, :12] = 255  # a white band on the stored left side: the rotation matters
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def _as_shown(path: Path) -> torch.Tensor:
    """The reference: the picture as a viewer shows it, square-resized like the loaders."""
    with Image.open(path) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    assert img.size == (32, 48)
    img = resize_crop(img, SIZE, None, Image.BICUBIC)  # the loaders' default interpolation
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def rotated_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("exif")
    cat = root / "phone"
    for i in range(2):
        _rotated_jpeg(cat / "train" / "good" / f"{i}.jpg", i)
    _rotated_jpeg(cat / "test" / "good" / "g.jpg", 5)
    _rotated_jpeg(cat / "test" / "dent" / "d.jpg", 6)
    mask = np.zeros((48, 32), dtype=np.uint8)  # drawn on the image as shown: 32 wide, 48 high
    mask[:4] = 255
    (cat / "ground_truth" / "dent").mkdir(parents=True)
    Image.fromarray(mask).save(cat / "ground_truth" / "dent" / "d_mask.png")
    return root


def _loaders(root: Path):
    """Every dataset class of padim_utils, on the same rotated files: (name, dataset)."""
    cat = root / "phone"
    yield "MVTecDataset train", MVTecDataset(root, "phone", "train", image_size=SIZE, crop=None)
    yield "MVTecDataset test", MVTecDataset(root, "phone", "test", image_size=SIZE, crop=None)
    yield "ImageFolderDataset folder", ImageFolderDataset(cat / "train" / "good", image_size=SIZE, crop=None)
    yield "ImageFolderDataset file", ImageFolderDataset(cat / "test" / "dent" / "d.jpg", image_size=SIZE, crop=None)


def test_every_loader_applies_exif_orientation(rotated_layout):
    seen = 0
    for name, dataset in _loaders(rotated_layout):
        for i in range(len(dataset)):
            item = dataset[i]
            assert torch.equal(item["image"], _as_shown(Path(item["path"]))), f"{name} reads {item['path']} rotated"
            seen += 1
    assert seen == 2 + 2 + 2 + 1


def test_mask_of_a_rotated_image_matches_the_image_as_shown(rotated_layout):
    test = MVTecDataset(rotated_layout, "phone", "test", image_size=SIZE, crop=None)
    item = test[test.defect_types.index("dent")]
    assert item["mask"][:2].all() and not item["mask"][-2:].any()  # the top rows, as drawn


def test_load_rgb_keeps_its_signature_and_reads_as_shown(rotated_layout):
    path = rotated_layout / "phone" / "test" / "good" / "g.jpg"
    assert load_rgb(path).size == (32, 48)  # EXIF applied by default
    assert load_rgb(path, exif_transpose=True).size == (32, 48)
    assert load_rgb(path, exif_transpose=False).size == (48, 32)  # the stored pixels, on request


def test_masks_with_exif_are_read_as_shown(tmp_path):
    arr = np.zeros((32, 48), dtype=np.uint8)
    arr[:, :4] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "m.png", exif=exif.tobytes())
    mask = np.asarray(load_mask(tmp_path / "m.png"))
    assert mask.shape == (48, 32) and mask[:4].all() and not mask[-4:].any()


def _calls_image_open(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open":
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "Image":
                return True
    return False


READER = PACKAGE / "datasets" / "images.py"  # the one module that opens image files


def test_only_the_shared_reading_path_opens_image_files():
    """New loaders (other layouts, other modules) must read through images.read_image / load_rgb / load_mask."""
    offenders = [p.name for p in sorted(PACKAGE.rglob("*.py"))
                 if p != READER and _calls_image_open(ast.parse(p.read_text()))]
    assert offenders == [], f"{offenders} open images themselves; use padim_utils.datasets.images.load_rgb / load_mask"
    data_tree = ast.parse(READER.read_text())
    opener = [f.name for f in ast.walk(data_tree) if isinstance(f, ast.FunctionDef) and _calls_image_open(f)]
    # _open reads every image (files and in-memory buffers); check_image_file only checks a file whole
    assert sorted(opener) == ["_open", "check_image_file"]
