"""Deploying a fitted PaDiM: its whole inference as one ONNX graph, checked against torch.

    path = export_onnx(model, "bottle.onnx")     # traced, checked with onnxruntime, then renamed into place
    session = onnx_session(path)                 # onnxruntime on the CPU (other providers: `providers=`)
    maps, scores = run_onnx(session, images)     # uint8 (B, 3, S, S) -> (B, S, S), (B,), as Padim.predict

What the graph computes (`PadimGraph.forward`, B free, S fixed by the model), by running under the
exporter the very functions `Padim.predict` runs:

    uint8 images (B, 3, S, S)
    -> ImageNet normalisation                     FeatureExtractor.normalize
    -> the backbone's stages up to its last layer FeatureExtractor.forward    [(B, C_i, h_i, w_i)]
    -> channel gather / PCA projection / none     Reducer (+ nearest upsampling, concatenation)  (B, d, h, w)
    -> Mahalanobis distance to each position's    scoring.mahalanobis with the stored mean (P, d)
       Gaussian                                   and precision (P, d, d), P = h * w             (B, h, w)
    -> upsampling and blur (matrix products)      scoring.anomaly_maps                           (B, S, S)
    -> the maximum                                scoring.image_scores                           (B,)

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export, then ONNX through onnxscript), opset 20,
a dynamic batch axis. With the pinned torch 2.14.1 it traces the package's own code unchanged; its graph
reproduces `Padim.predict` to a few 1e-6 of each map's peak on 64 px images and a few 1e-5 at 256 px (real
bottle; see `Validation`). One eager run precedes the trace (see `_trace`). The legacy TorchScript exporter
(`dynamo=False`) is deprecated since torch 2.9 and writes a graph onnxruntime refuses to load: it
translates the reducer's `movedim(-1, 1)` into a Transpose with a negative axis in `perm`.

Size: the file holds the backbone's weights and the Gaussians. The precision matrices dominate:
P * d^2 * 4 bytes in float32 (offline_lite0 at 256 px: 4096 * 100^2 * 4 = 164 MB). `precision="float16"`
stores them in half the bytes (onnxruntime casts them back to float32 once, when it loads the file), and a
smaller d shrinks them quadratically; `benchmarks/bench_export.py` measures what each costs in accuracy.
One ONNX file holds at most 2 GB (protobuf's limit): larger models are refused with that advice.
"""

from __future__ import annotations

import copy
import os
import re
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import PadimError
from .extras import need, optional
from .files import atomic_path, check_output_file
from .measure import timed
from .model import NonFiniteMapError, Padim
from .scoring import anomaly_maps, image_scores, mahalanobis

__all__ = ["OPSET", "PRECISIONS", "TOLERANCE", "PadimGraph", "size_breakdown", "export_onnx", "onnx_session",
           "run_onnx", "Validation", "peak_relative_error", "pixel_relative_error", "reference_model",
           "compare_with_torch", "probe_images", "time_inference"]

#: ONNX opset of the export: torch 2.14.1's default, which its exporter and onnxruntime 1.31 support fully.
OPSET = 20
#: How the precision matrices can be stored in the file.
PRECISIONS = ("float32", "float16")
#: Largest difference between the graph's maps and Padim.predict's, relative to each map's peak, that validation
#: accepts (see `Validation`).
TOLERANCE = 1e-4
#: protobuf's limit on one serialised message: a single-file ONNX model must stay below it.
ONNX_FILE_LIMIT = 2**31 - 1
_BYTES = {"float32": 4, "float16": 2}


def _check_exportable(model: Padim, precision: str) -> None:
    if model.precision is None:
        raise PadimError("the model is not fitted: call fit() or Padim.load() first, then export it")
    if precision not in PRECISIONS:
        raise PadimError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if model.config.dtype != "float32":
        why = ("onnxruntime's CPU convolutions have no float64 kernels" if model.config.dtype == "float64" else
               f"its backbone runs in {model.config.dtype} under autocast, which an ONNX graph does not reproduce")
        raise PadimError(f"only float32 models can be exported, this one has dtype={model.config.dtype} ({why}); "
                         "fit it with dtype='float32'")
    if model.grid != model.config_grid:
        raise PadimError(f"the model's patch grid {list(model.grid)} does not fit its config's {model.config.out_size}px "
                         f"images (they give {list(model.config_grid)}): re-fit the model")


def _check_replaceable(path: Path) -> None:
    """An existing file at `path` is replaced only if it is an ONNX graph (an earlier export): never the model
    file, a feature cache or any other file."""
    if not path.is_file():
        return
    import onnx

    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then its JSON
        raise PadimError(f"{path} is a safetensors file (a padim model or feature cache), not an ONNX graph: "
                         "export to another file")
    try:
        graph = onnx.load_model(str(path), load_external_data=False).graph
    except Exception:  # protobuf's DecodeError and onnx's own errors
        graph = None
    if graph is None or not graph.node:
        raise PadimError(f"{path} exists and is not an ONNX graph: export to another file, or remove it first")


class PadimGraph(nn.Module):
    """The whole inference of a fitted `Padim` as one module: what `export_onnx` traces.

    Holds the model's backbone (a submodule: its weights become the graph's initializers), its reducer,
    and the mean and precision as buffers; `precision="float16"` stores the precision in half precision
    and computes with it in float32, as `Padim.predict` would with the rounded matrices.
    """

    def __init__(self, model: Padim, precision: str = "float32"):
        super().__init__()
        _check_exportable(model, precision)
        self.extractor = model.extractor  # normalisation constants, stages, hooked layers
        self.reducer = model.reducer  # channel index / PCA projection: constants of the graph
        self.out_size, self.sigma = model.config.out_size, model.config.sigma
        self.interpolation = model.config.interpolation
        self.positions = model.grid[0] * model.grid[1]  # P = h * w
        store = torch.float16 if precision == "float16" else torch.float32
        self.register_buffer("mean", model.mean)  # (P, d)
        self.register_buffer("precision", model.precision.to(store))  # (P, d, d)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, S, S) -> maps (B, S, S) and scores (B,), float32."""
        x = self.extractor.normalize(images)  # (B, 3, S, S) float32
        emb = self.reducer(self.extractor(x))  # layers [(B, C_i, h_i, w_i)] -> (B, d, h, w)
        precision = self.precision.float()  # float16 storage: cast once, when onnxruntime loads the file
        dist = mahalanobis(emb, self.mean, precision, chunk=self.positions)  # (B, h, w): one chunk, one MatMul
        maps = anomaly_maps(dist, self.out_size, self.sigma, self.interpolation)  # (B, S, S)
        return maps, image_scores(maps)  # (B, S, S), (B,)


def size_breakdown(model: Padim, precision: str = "float32") -> dict[str, int]:
    """Bytes the graph's constants take in the file: precision, mean, backbone; "total" is their sum.

    precision: P * d^2 * (4 or 2), mean: P * d * 4, backbone: its parameters and buffers at 4 bytes each
    (the batch norms end up folded into the convolutions, so the file's backbone can be a little smaller).
    """
    _check_exportable(model, precision)
    p, d = model.mean.shape
    parts = {"precision": p * d * d * _BYTES[precision], "mean": p * d * 4,
             "backbone": 4 * sum(t.numel() for t in (*model.extractor.parameters(), *model.extractor.buffers())
                                 if t.is_floating_point())}
    return {**parts, "total": sum(parts.values())}


def probe_images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    """`n` smooth, seeded uint8 images (n, 3, size, size): what export traces and validates with when no
    images are given (random colour fields, bilinearly enlarged from 8 x 8).

    >>> images = probe_images(64)
    >>> images.shape, images.dtype, torch.equal(images, probe_images(64))
    (torch.Size([2, 3, 64, 64]), torch.uint8, True)
    """
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 255
    big = nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8)


def _check_images(images: torch.Tensor, size: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or images.dtype != torch.uint8 or tuple(images.shape[-2:]) != (size, size) or len(images) == 0:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise PadimError(f"expected uint8 images of shape (B, 3, {size}, {size}) with B >= 1, got {got}")


def _trace(graph: PadimGraph, example: torch.Tensor, path: Path, opset: int) -> None:
    """torch.onnx.export (dynamo) of `graph` into one file at `path`; exporter failures become PadimError.

    The exporter annotates every node with its Python stack trace and module path (local file paths, and
    0.1 to 0.7 MB of text, depending on the backbone's code): removed, so the file holds the computation only.
    """
    batch = torch.export.Dim("batch", min=1)
    # One eager run first: the scoring functions cache the resize and blur matrices they build, and a
    # first call under the exporter's fake tensors would cache fake ones (and break every later predict).
    with torch.no_grad():
        graph(example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on decompositions and deprecations
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["maps", "scores"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except torch.onnx.errors.OnnxExporterError as e:
        cause = e.__cause__ or e  # the exporter wraps torch.export's or onnxscript's own error
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines() or [""]
        raise PadimError(f"the ONNX exporter failed on this model ({type(cause).__name__}: {first[0]})") from e
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()
    program.save(str(path), external_data=False)


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
    """An onnxruntime InferenceSession for `path` (CPU unless `providers` says otherwise, e.g.
    ["CUDAExecutionProvider"] with the onnxruntime-gpu package); `threads` intra-op threads (default:
    onnxruntime's choice)."""
    ort = optional("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
    if not Path(path).is_file():
        raise PadimError(f"ONNX file not found: {path}")
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph types
        raise PadimError(f"{path} is not a loadable ONNX model ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]})") from None


def _image_size(session) -> int:
    return int(session.get_inputs()[0].shape[-1])


def run_onnx(session, images: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (B, 3, S, S) -> (maps (B, S, S), scores (B,)) float32 on the CPU, as `Padim.predict`
    returns them, from an exported graph; `batch_size` splits B into runs of at most that many images.
    A map holding NaN or inf raises `NonFiniteMapError`, as in `Padim.predict`."""
    _check_images(images, _image_size(session))
    step = batch_size or len(images)
    maps, scores = [], []
    for s in range(0, len(images), step):
        m, sc = session.run(["maps", "scores"], {"images": images[s : s + step].cpu().numpy()})
        maps.append(torch.from_numpy(m))
        scores.append(torch.from_numpy(sc))
    maps, scores = torch.cat(maps), torch.cat(scores)
    bad = ~torch.isfinite(maps).flatten(1).all(1)
    if bad.any():
        raise NonFiniteMapError(int(bad.nonzero()[0, 0]))
    return maps, scores


@dataclass(frozen=True)
class Validation:
    """How an exported graph's outputs compare with `Padim.predict` on the same images.

    max_relative_error: the largest |onnx - torch| over a map, divided by that map's peak |torch| (the
    value its image score reads), worst image; `ok` holds it to `tolerance`. max_pixel_relative_error: the
    largest |onnx - torch| / |torch| of any single pixel, reported, not held to the tolerance: two correct
    float32 backbones (onnxruntime's convolutions and torch's, or torch's own two memory layouts) differ by
    ~1e-6 in the features, and the Mahalanobis distance amplifies that most where the distance is smallest
    (real bottle, offline_lite0: 1.7e-4 at the worst pixel, 8e-7 at the median; torch channels-last against
    torch NCHW 3.3e-5). ranks_equal: the scores put the images in the same order.
    """

    n_images: int
    max_relative_error: float
    max_pixel_relative_error: float
    max_score_relative_error: float
    ranks_equal: bool
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_relative_error <= self.tolerance and self.ranks_equal  # NaN compares False: not ok

    def __str__(self) -> str:
        order = "scores in the same order" if self.ranks_equal else "scores in a DIFFERENT order"
        return (f"maps differ from Padim.predict's by at most {self.max_relative_error:.1e} of each map's peak "
                f"(tolerance {self.tolerance:.0e}; worst single pixel {self.max_pixel_relative_error:.1e} relative) "
                f"on {self.n_images} image(s), {order}")


def _finite(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.isfinite(a).all() and np.isfinite(b).all())


def peak_relative_error(maps: np.ndarray, ref: np.ndarray) -> float:
    """max over images of max |maps - ref| / max |ref|, each (S, S) map against its own peak; NaN/inf -> inf."""
    if not _finite(maps, ref):
        return float("inf")
    n = len(ref)
    err = np.abs(maps - ref).reshape(n, -1).max(1)  # (B,)
    peak = np.maximum(np.abs(ref).reshape(n, -1).max(1), np.finfo(np.float32).tiny)  # (B,)
    return float((err / peak).max())


def pixel_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / |b| over every value (b floored at 1e-6 of max |b|); NaN/inf -> inf."""
    if not _finite(a, b):
        return float("inf")
    floor = max(float(np.abs(b).max()) * 1e-6, np.finfo(np.float32).tiny)
    return float((np.abs(a - b) / np.maximum(np.abs(b), floor)).max())


def reference_model(model: Padim, precision: str = "float32") -> Padim:
    """The torch model an export with `precision` must reproduce: `model` itself, or a shallow copy whose
    precision matrices are rounded to float16 (the rounding the file stores)."""
    if precision == "float32":
        return model
    ref = copy.copy(model)
    ref.precision = model.precision.half().to(model.precision.dtype)
    return ref


def compare_with_torch(path_or_session, model: Padim, images: torch.Tensor, precision: str = "float32",
                       tolerance: float = TOLERANCE) -> Validation:
    """Run the exported graph (a path or a session) and `Padim.predict` on `images`; see `Validation`.

    The images go through the graph once as one batch and once one by one (the batch axis is dynamic).
    """
    session = path_or_session if hasattr(path_or_session, "run") else onnx_session(path_or_session)
    _check_images(images, model.config.out_size)
    ref_maps, ref_scores = reference_model(model, precision).predict(images)
    maps, scores = run_onnx(session, images)
    singles = torch.cat([run_onnx(session, images[i : i + 1])[0] for i in range(len(images))])
    ref = ref_maps.numpy()
    peak = max(peak_relative_error(m.numpy(), ref) for m in (maps, singles))
    pixel = max(pixel_relative_error(m.numpy(), ref) for m in (maps, singles))
    order = np.array_equal(np.argsort(scores.numpy(), kind="stable"), np.argsort(ref_scores.numpy(), kind="stable"))
    return Validation(len(images), peak, pixel, pixel_relative_error(scores.numpy(), ref_scores.numpy()), bool(order),
                      tolerance)


def export_onnx(model: Padim, path: str | os.PathLike, precision: str = "float32", validate: bool = True,
                images: torch.Tensor | None = None, opset: int = OPSET) -> Path:
    """Write `model`'s whole inference to one ONNX file at `path` (see the module docstring); returns the path.

    The graph is written to a temporary file beside `path`; with `validate` (the default) onnxruntime runs
    it on `images` (uint8 (B, 3, S, S); default: `probe_images`) against `Padim.predict`, and only an
    export within `TOLERANCE` with the scores in the same order is renamed to `path`; otherwise PadimError
    and nothing is written. An unfitted model, a model whose grid does not fit its config, an unwritable path,
    an existing file at `path` that is not an ONNX graph (the model file itself, say), a model over ONNX's
    2 GB limit or a missing `onnx` extra: PadimError before any work.
    """
    need("onnx")
    path = check_output_file(path)
    graph = PadimGraph(model, precision).eval()
    size = size_breakdown(model, precision)["total"]
    if size >= ONNX_FILE_LIMIT:
        raise PadimError(f"the graph would hold {size / 1e9:.2f} GB of weights, over ONNX's 2 GB single-file limit "
                         f"(the precision matrices: P * d^2 * {_BYTES[precision]} bytes); export with "
                         "precision='float16' or fit a smaller d")
    images = probe_images(model.config.out_size) if images is None else images
    _check_images(images, model.config.out_size)
    _check_replaceable(path)
    # traced with two images, so that the batch axis stays free (an example of one specialises it to 1)
    example = images[torch.arange(2) % len(images)].to(model.device)
    with atomic_path(path) as tmp:
        _trace(graph, example, tmp, opset)
        if validate:
            try:
                report = compare_with_torch(tmp, model, images, precision)
            except PadimError as e:  # name the file asked for, not its temporary copy
                raise PadimError(str(e).replace(str(tmp), str(path))) from None
            if not report.ok:
                raise PadimError(f"the exported graph does not reproduce Padim.predict ({report}); nothing was "
                                 f"written to {path}")
    return path


def time_inference(predict, images: torch.Tensor, batch_size: int, repeats: int = 10, warmup: int = 2) -> dict:
    """Latency and throughput of `predict` (a callable taking uint8 images (B, 3, S, S), e.g. `model.predict`
    or `lambda x: run_onnx(session, x)`) on batches of `batch_size` images (`images` cycled to that length).

    Returns batch_size, latency_s (median seconds per batch over `repeats` calls after `warmup` calls),
    latency_min_s, and images_per_s (batch_size / median latency).
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise PadimError("batch_size and repeats must be >= 1 and warmup >= 0")
    batch = images[torch.arange(batch_size) % len(images)].contiguous()  # (batch_size, 3, S, S)
    for _ in range(warmup):
        predict(batch)
    seconds = [timed(predict, batch)[1] for _ in range(repeats)]
    median = statistics.median(seconds)
    return {"batch_size": batch_size, "latency_s": median, "latency_min_s": min(seconds),
            "images_per_s": batch_size / median}
