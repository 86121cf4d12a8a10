"""A small synthetic anomaly-detection dataset in the MVTec AD folder layout.

The course (and CI) must run without downloading MVTec AD, so this module draws
two categories procedurally, with numpy + scipy only, and writes them as PNGs in
exactly the MVTec layout that :class:`padim_utils.datasets.mvtec.MVTecDataset` reads::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png     (0 / 255)
    <root>/<category>/README.txt                             (says it is synthetic)
    <root>/<category>/.synthetic.json                        (generation parameters)

Categories
----------
``carpet_syn`` (texture)
    A basket weave of beige yarn: over/under cells whose top thread is shaded
    like a cylinder and dips where it goes under, per-thread brightness,
    fibre streaks along each thread, mid-scale colour blotches and a slight
    warp of the weave. Every image has its own weave phase, a small rotation
    (+-3 deg), cell size (+-5 %) and "dye lot" (hue +-12 deg sd, saturation
    x0.75-1.3), so no pixel position holds a fixed value or colour.
    Defects: ``hole`` (darker, weave-less irregular blob with a lighter frayed
    rim), ``thread`` (a stray curved yarn lying across the weave, near the
    carpet's own tone), ``stain`` (a low-contrast tinted blob, texture kept,
    soft edge with a slightly denser drying ring), ``color`` (a region whose
    hue is rotated by 20-45 deg at constant luminance).

``bottle_syn`` (object)
    A dark glass bottle seen from above on a light background, like MVTec's
    ``bottle``: concentric rings (dark opening, bright lip, neck, shoulder
    highlight, outer rim) with per-image jitter of ring radii and tones, a
    directional light whose angle changes per image, orange reflections,
    moulding streaks along the angle, a soft halo, and a pose jitter of the
    centre (+-1.5 % of the side) and radius (+-3 %).
    Defects: ``broken`` (a chunk of the rim or lip missing, replaced by the
    background or the dark inside, with a bright fracture edge), ``contamination``
    (a translucent, mottled residue on the glass), ``scratch`` (one to three thin
    curved light lines on the glass).

Defect regions cover roughly 0.2 %-5 % of the image (log-uniform area; the thin
``scratch``/``thread`` lines are at the small end) and 30 % of defective images
have two regions.

Why raw pixels are a weak detector here
---------------------------------------
Every image, good or not, gets a global brightness gain (+-12 %), a per-channel
colour gain (2 % sd), a smooth illumination ramp (up to +-5 %) and sensor noise
(sd ~2.5 grey levels); the textures also move (random phase/rotation) and the
object moves and is lit from a random side. So the per-pixel mean/variance of
the good images is wide, and most defects change intensities by about as much
as that normal variation (stains, contamination, colour shifts, threads:
roughly 5-15 % changes). What gives them away is structure - a line crossing
the weave, a patch with no weave, a broken ring, a mottled film, a
hue boundary - which is what pretrained CNN features (edges, textures,
colour-opponent units) respond to. Holes and broken parts are the "easy" types.

A rough check while writing this module (default settings, 224 crop, a
PaDiM-style per-position Gaussian, image / pixel AUROC): raw 4x4-pooled RGB
pixels 0.67 / 0.75 on carpet_syn and 0.81 / 0.89 on bottle_syn; randomly
initialised efficientnet_lite0 features 0.42 / 0.56 and 0.77 / 0.89;
ImageNet-pretrained efficientnet_lite0 (80 random channels) 0.97 / 0.97 and
0.99 / 0.99. The hardest type for pretrained features is ``stain``.

Exact masks
-----------
Each sample is rendered twice from the same random state: the clean image and
the defective one (see :func:`generate_sample`, which returns both). A defect
is alpha-blended into the scene *before* the global lighting, colour gain and
sensor noise, which are then applied identically (pixel-wise) to both, so:

* the mask is the defect's support: the pixels whose blend weight is at least
  ``ALPHA_THRESHOLD`` (0.15; soft edges below that are cut, so stains have soft
  but *masked* edges);
* outside the mask the defective image is bit-identical to the clean image;
* inside the mask every pixel differs from the clean image in at least one
  channel: a pixel whose blended change rounds to zero gets a +-1 grey-level
  nudge (invisible, but it makes the rule exact).

Hence ``mask == (image != clean).any(axis=-1)`` holds exactly for every sample.

Reproducibility: each image has its own random generator seeded by
``(seed, category, split, defect type, index)``, so the output is the same bytes
for the same parameters (on the same numpy version) and does not depend on how
many images of another kind were drawn. Idempotence: a category folder whose
``.synthetic.json`` matches the requested parameters is left alone; otherwise it
is regenerated in a hidden temporary folder and swapped in by renaming. A folder
with the category's name but no ``.synthetic.json`` (real data?) is never
overwritten: that raises :class:`PadimError`.

Defaults (what the course uses): 60 train, 20 test good and 10 test images per
defect type at 256 x 256, i.e. 230 images, which take a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..config import MIN_IMAGE_SIZE
from ..errors import PadimError
from ..progress import progress_bar
from .base import check_split
from .generated import MARKER, build_folder, check_count, read_marker
from .mvtec import data_home
from .scenes import (  # noqa: F401  (ALPHA_THRESHOLD is public here too)
    ALPHA_THRESHOLD,
    AREA_RANGE,
    Scene,
    bottle_region,
    carpet_region,
    make_post,
    quantize,
    render_bottle,
    render_carpet,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_CATEGORIES",
    "ALPHA_THRESHOLD",
    "GENERATOR_VERSION",
    "Sample",
    "defect_types",
    "generate_sample",
    "make_synthetic_mvtec",
]

GENERATOR_VERSION = 1
DEFAULT_CATEGORIES = ("carpet_syn", "bottle_syn")
P_TWO_REGIONS = 0.3


@dataclass
class Sample:
    """One rendered image: ``clean`` and ``image`` are uint8 (H, W, 3), ``mask`` bool (H, W).

    For good images ``image`` equals ``clean`` and ``mask`` is all False.
    """

    clean: np.ndarray
    image: np.ndarray
    mask: np.ndarray


# --------------------------------------------------------------------------- #
# registry and sample generation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Category:
    name: str
    kind: str  # "texture" or "object"
    defects: tuple[str, ...]
    render: Callable[[np.random.Generator, int], Scene]
    region: Callable[[np.random.Generator, Scene, str], tuple[np.ndarray, np.ndarray]]
    description: str


CATEGORIES: dict[str, _Category] = {
    "carpet_syn": _Category(
        "carpet_syn",
        "texture",
        ("color", "hole", "stain", "thread"),
        render_carpet,
        carpet_region,
        "woven beige carpet texture (basket weave with per-image phase, rotation and colour jitter)",
    ),
    "bottle_syn": _Category(
        "bottle_syn",
        "object",
        ("broken", "contamination", "scratch"),
        render_bottle,
        bottle_region,
        "dark glass bottle seen from above on a light background (pose and lighting jitter)",
    ),
}


def _category(name: str) -> _Category:
    try:
        return CATEGORIES[name]
    except KeyError:
        raise PadimError(
            f"unknown synthetic category {name!r}; available: {', '.join(sorted(CATEGORIES))}"
        ) from None


def defect_types(category: str) -> tuple[str, ...]:
    """Defect types drawn for a synthetic category (sorted)."""
    return _category(category).defects


def _rng(seed: int, category: str, split: str, defect_type: str, index: int, stream: int) -> np.random.Generator:
    key = [
        int(seed),
        zlib.crc32(category.encode()),
        zlib.crc32(split.encode()),
        zlib.crc32(defect_type.encode()),
        int(index),
        stream,
    ]
    return np.random.default_rng(key)


def generate_sample(
    category: str,
    split: str = "test",
    defect_type: str = "good",
    index: int = 0,
    image_size: int = 256,
    seed: int = 0,
) -> Sample:
    """Render one image exactly as :func:`make_synthetic_mvtec` writes it, plus its clean twin.

    ``split`` is ``"train"`` or ``"test"``; ``defect_type`` is ``"good"`` or one of
    :func:`defect_types`. Returns a :class:`Sample` (clean, image, mask) with
    ``mask == (image != clean).any(-1)`` exactly (see the module docstring).
    """
    spec = _category(category)
    check_split(split)
    if defect_type != "good" and defect_type not in spec.defects:
        raise PadimError(
            f"unknown defect type {defect_type!r} for {category}; available: good, {', '.join(spec.defects)}"
        )
    if split == "train" and defect_type != "good":
        raise PadimError("the train split only holds good images (defect_type='good')")
    n = check_count("image_size", image_size, MIN_IMAGE_SIZE)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise PadimError(f"index must be a non-negative integer, got {index!r}")

    rng_clean = _rng(seed, category, split, defect_type, index, 0)
    scene = spec.render(rng_clean, n)
    post = make_post(rng_clean, n, scene.x, scene.y)
    clean = quantize(post(scene.base))
    if defect_type == "good":
        return Sample(clean=clean, image=clean.copy(), mask=np.zeros((n, n), dtype=bool))

    rng_def = _rng(seed, category, split, defect_type, index, 1)
    min_px = max(6, int(0.001 * n * n))
    n_regions = 2 if rng_def.random() < P_TWO_REGIONS else 1
    for _attempt in range(20):
        current, mask = scene, np.zeros((n, n), dtype=bool)
        for _ in range(n_regions):
            new_base, support = spec.region(rng_def, current, defect_type)
            current = replace(current, base=new_base)
            mask |= support
        if mask.sum() >= min_px:
            break
    base = current.base
    image = quantize(post(base))
    image = np.where(mask[..., None], image, clean)  # by construction already equal
    same = mask & (image == clean).all(-1)
    if same.any():  # rounding ate the change: nudge by one grey level
        c = clean[same].astype(np.int16)
        image[same] = np.where(c < 255, c + 1, c - 1).astype(np.uint8)
    return Sample(clean=clean, image=image, mask=mask)


# --------------------------------------------------------------------------- #
# writing the dataset
# --------------------------------------------------------------------------- #
def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=1)


def _readme(spec: _Category, params: dict[str, Any]) -> str:
    return (
        f"{spec.name}: SYNTHETIC data, not MVTec AD.\n"
        f"\n"
        f"Drawn procedurally by padim_utils.datasets.synthetic (generator version {GENERATOR_VERSION}) so the\n"
        f"PaDiM course runs without downloads. It uses the MVTec AD folder layout.\n"
        f"\n"
        f"Content: {spec.description} ({spec.kind} category).\n"
        f"Defect types: {', '.join(spec.defects)}.\n"
        f"Images: {params['n_train']} train/good, {params['n_test_good']} test/good, "
        f"{params['n_test_defect_per_type']} per defect type; {params['image_size']}x{params['image_size']} RGB PNG; "
        f"seed {params['seed']}.\n"
        f"Masks (ground_truth/<defect>/<stem>_mask.png, 0/255): exactly the pixels that differ from the\n"
        f"clean rendering of the same image (defect blend weight >= {ALPHA_THRESHOLD}; pixels outside the\n"
        f"mask are bit-identical to the clean image, pixels inside differ by at least one grey level).\n"
        f"Parameters are stored in {MARKER}; rerunning with the same parameters keeps these files.\n"
    )


def _write_category(folder: Path, spec: _Category, params: dict[str, Any]) -> None:
    n, seed = params["image_size"], params["seed"]
    width = max(3, len(str(max(params["n_train"], params["n_test_good"], params["n_test_defect_per_type"]) - 1)))
    jobs = [("train", "good", i) for i in range(params["n_train"])]
    jobs += [("test", "good", i) for i in range(params["n_test_good"])]
    jobs += [("test", d, i) for d in spec.defects for i in range(params["n_test_defect_per_type"])]
    for split, defect, i in progress_bar(jobs, f"synth {spec.name}", None, unit="img"):
        (folder / split / defect).mkdir(parents=True, exist_ok=True)
        s = generate_sample(spec.name, split, defect, i, n, seed)
        _save_png(s.image, folder / split / defect / f"{i:0{width}d}.png")
        if defect != "good":
            (folder / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            _save_png(s.mask.astype(np.uint8) * 255, folder / "ground_truth" / defect / f"{i:0{width}d}_mask.png")
    (folder / "README.txt").write_text(_readme(spec, params), encoding="utf-8")
    # the marker goes last (generated.build_folder): a folder with a marker is complete


def make_synthetic_mvtec(
    root: str | os.PathLike,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect_per_type: int = 10,
    image_size: int = 256,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write synthetic categories in the MVTec AD layout under ``root``; return ``root``.

    A category folder whose ``.synthetic.json`` matches the parameters is kept as
    it is (unless ``force``); otherwise it is (re)generated in a temporary folder
    and renamed into place. A folder without ``.synthetic.json`` is never touched:
    PadimError. Available categories: :data:`CATEGORIES`.
    """
    if isinstance(categories, str):
        categories = (categories,)
    specs = [_category(c) for c in categories]
    if not specs:
        raise PadimError("categories is empty: name at least one of " + ", ".join(sorted(CATEGORIES)))
    params_common = {
        "generator_version": GENERATOR_VERSION,
        "n_train": check_count("n_train", n_train, 1),
        "n_test_good": check_count("n_test_good", n_test_good, 1),
        "n_test_defect_per_type": check_count("n_test_defect_per_type", n_test_defect_per_type, 1),
        "image_size": check_count("image_size", image_size, MIN_IMAGE_SIZE),
        "seed": check_count("seed", seed, 0),
    }
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PadimError(f"synthetic data root is not a folder: {root}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"cannot create synthetic data root {root}: {exc.strerror or exc}") from None

    for spec in specs:
        params = dict(params_common, category=spec.name, defect_types=list(spec.defects))
        target = root / spec.name
        if target.exists():
            marker = read_marker(target)
            if marker is None:
                raise PadimError(
                    f"refusing to overwrite {target}: it exists but has no {MARKER} (not synthetic data?)"
                )
            if marker == params and not force:
                continue
        build_folder(target, params, lambda folder, p, spec=spec: _write_category(folder, spec, p), force)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m padim_utils.datasets.synthetic [ROOT]``: write the synthetic categories."""
    parser = argparse.ArgumentParser(prog="python -m padim_utils.datasets.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="output folder (default: $PADIM_DATA/synthetic or ./data/synthetic)")
    parser.add_argument("--categories", nargs="+", default=list(DEFAULT_CATEGORIES), help="which categories")
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test-good", type=int, default=20)
    parser.add_argument("--n-test-defect-per-type", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = data_home() / "synthetic"
    try:
        out = make_synthetic_mvtec(
            args.root,
            args.categories,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_defect_per_type=args.n_test_defect_per_type,
            image_size=args.image_size,
            seed=args.seed,
            force=args.force,
        )
    except PadimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
