"""Images in: every dataset the course reads, as uint8 tensors at one geometry.

    train = MVTecDataset("data/mvtec_ad", "bottle", "train", geometry=cfg.geometry)
    test = open_dataset("btad", None, "01", "test")          # any dataset by name, its default root
    make_synthetic_mvtec("data/synthetic")                   # the embedded set, in MVTec AD's layout

Modules, in reading order: `images` (reading an image file: decode, resize, crop, batch), `base`
(`ImageDataset`, what every dataset shares: the geometry, the lists of files, the items), `mvtec`
(MVTec AD and your own folder of images: the layout the others follow), `rd_mvtec` (randomly rotated and
cropped), `video` (video files, PyAV) and `stc` (ShanghaiTech Campus video frames), `registry` (BTAD, VisA,
folders, `open_dataset` by name); the generated sets: `generated` (how they are written), `synthetic` +
`scenes` (the embedded set), `stc_synthetic` (STC's layout), `walkway` (chapter 07's scene); `download`,
`imagecache` (decoded images on disk), `loader` (worker processes that decode batches).
"""

from .base import CategoryDataset, ImageDataset
from .images import collate, list_images, load_mask, load_rgb, read_image, resize_crop
from .mvtec import ImageFolderDataset, MVTecDataset, data_home, list_categories
from .rd_mvtec import RdMVTecDataset
from .registry import (BTADDataset, FolderDataset, VisADataset, dataset_categories, mvtec_categories,
                       open_dataset)
from .stc import STCDataset, match_test_codec, stc_scenes
from .stc_synthetic import make_synthetic_stc
from .synthetic import make_synthetic_mvtec
from .walkway import make_walkway_stc

__all__ = ["ImageDataset", "CategoryDataset", "MVTecDataset", "ImageFolderDataset", "RdMVTecDataset",
           "STCDataset", "BTADDataset", "VisADataset", "FolderDataset", "open_dataset", "dataset_categories",
           "mvtec_categories", "list_categories", "stc_scenes", "make_synthetic_mvtec", "make_synthetic_stc",
           "make_walkway_stc", "match_test_codec", "collate", "data_home", "list_images", "load_mask", "load_rgb",
           "read_image", "resize_crop"]
