"""Chapter 11: from notebook to production line."""

from . import exercise
from ._common import as_number


@exercise("11.1")
def onnx_file_size(answer, positions, d, backbone_parameters, file_bytes):
    """The size in bytes of a float32 ONNX export, predicted from P, d and the backbone's parameter count:
    4 bytes x (P d^2 precision + P d mean + the backbone's weights). Right when within 5 % of the real file
    (the exporter folds batch norms into the convolutions; the graph's own description adds under 0.1 MB) and
    nearer the right formula than to a typical slip."""
    try:
        a = as_number(answer)
    except (TypeError, ValueError):
        return f"answer with one number of bytes, got {answer!r}."
    p, n = int(positions), int(backbone_parameters)
    right = 4 * (p * d * d + p * d + n)
    slips = {
        "that counts numbers, not bytes: a float32 takes 4 bytes.": right / 4,
        "that is bits; answer in bytes (8 bits each).": right * 8,
        "that is MiB; answer in bytes (1 MiB = 2**20 bytes).": right / 2**20,
        "each position stores a d x d precision matrix: P * d^2 numbers, not P * d.": 4 * (2 * p * d + n),
        "the file also holds the backbone's weights (4 bytes per parameter), not only the Gaussians.":
            4 * (p * d * d + p * d),
        "the Gaussians are one per position: P positions (h * w), not one per row of the grid.":
            4 * (round(p**0.5) * (d * d + d) + n),
    }
    nearest = min(slips, key=lambda m: abs(a - slips[m]))
    if abs(a - slips[nearest]) < abs(a - right) and abs(a - slips[nearest]) <= 0.03 * slips[nearest]:
        return f"{a:.6g} bytes: {nearest}"
    if abs(a - file_bytes) <= 0.05 * file_bytes:
        return None
    return (f"{a:.6g} bytes is more than 5 % away from what the file holds: count 4 bytes for each number of the "
            "precision matrices, the means and the backbone.")
