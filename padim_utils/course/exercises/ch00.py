"""Chapter 00: setup and data."""

import numpy as np
from PIL import Image

from ...datasets.images import load_mask, resize_crop
from . import exercise
from ._common import compare_number, items


@exercise("0.1")
def defects_in_test_set(answer, test):
    """(number of defective test images, fraction of defective pixels), counted from the mask files."""
    answer = items(answer, 2)
    if answer is None:
        return "answer with a tuple (n_defective, fraction)."
    mask_files = [p for p in test.mask_paths if p is not None]
    defect_pixels = sum(int(np.asarray(resize_crop(load_mask(p), test.image_size, test.crop, Image.NEAREST)).sum())
                        for p in mask_files)
    fraction = defect_pixels / (len(test) * test.out_size**2)
    return (compare_number(answer[0], len(mask_files), "the number of defective images",
                           hint="count the test items whose `label` is 1 (`test.labels` lists them all).")
            or compare_number(answer[1], fraction, "the fraction of defective pixels",
                              hint="average the masks (1 on a defective pixel, 0 elsewhere) over every pixel of "
                                   "every test image, the good images included."))
