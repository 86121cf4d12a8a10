"""Chapter 01: embedding extraction."""

import numpy as np

from . import exercise
from ._common import as_array, compare_arrays, tolerance


@exercise("1.1")
def embedding_by_hand(answer, layers):
    """The PaDiM embedding of `layers` [(B, C_k, h_k, w_k)], rebuilt with numpy: nearest upsampling by an
    integer factor is `np.repeat` along both grid axes, then concatenation along the channels."""
    maps = [as_array(f) for f in layers]
    h, w = maps[0].shape[-2:]
    parts = []
    for f in maps:
        rh, rw = h // f.shape[-2], w // f.shape[-1]
        parts.append(np.repeat(np.repeat(f, rh, axis=-2), rw, axis=-1))
    expected = np.concatenate(parts, axis=1)
    shape = getattr(answer, "shape", None)
    if shape is not None and tuple(shape) != expected.shape and len(shape) == 4 and shape[1] == expected.shape[1]:
        return (f"your embedding has a {tuple(shape[-2:])} grid; every layer should be brought to the first "
                f"layer's {h}x{w} grid.")
    # exact (nearest upsampling copies values), but for the rounding of an answer held in float32 or coarser
    return compare_arrays(answer, expected, "your embedding", rtol=tolerance(answer, 0.0), atol=0,
                          hint="upsample each layer with F.interpolate(f, size=layers[0].shape[-2:], "
                               "mode=\"nearest\"), then torch.cat the layers in their order along dim=1.")
