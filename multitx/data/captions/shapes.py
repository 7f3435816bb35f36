"""data=shapes: a captioning dataset that Pillow draws, deterministic from a seed, no download.

Each image holds one to three shapes (5 kinds, 6 colours, 2 sizes) on a noisy
dark background, laid out so that what is where has one right description:

    one shape     in one of 9 places     "a small red circle in the top left corner"
    two shapes    side by side / stacked "a large blue cross to the left of a small white square"
    three shapes  in a row / a column    "a small green diamond a large yellow circle and a small red square
                                          from left to right"

and three captions per image in different phrasings ("a X to the left of a Y",
"a Y to the right of a X", "there is a X to the left of a Y").

The test (and val) split holds only images with a combination the training
split never shows: colour-shape pairs at a size (HELD_OUT_OBJECTS: training
draws large red triangles and small red circles, never a small red triangle)
and arrangements (HELD_OUT_ARRANGEMENTS: never a circle left of a triangle,
never a square in the top right corner). A model that scores well there
composes what it learnt rather than recalling it.

Scenes are drawn at 4x the image size and shrunk (anti-aliased edges), then
a little noise is added.
"""

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235),
    "yellow": (235, 215, 40), "purple": (160, 60, 210), "white": (235, 235, 235),
}
SIZES = {"small": (0.085, 0.100), "large": (0.140, 0.155)}  # half-width range, as a fraction of the image side
# The 3 x 3 places of a lone shape, row by row.
PLACES = (
    "in the top left corner", "at the top", "in the top right corner",
    "on the left", "in the center", "on the right",
    "in the bottom left corner", "at the bottom", "in the bottom right corner",
)
# Colour-shape pairs held out at one size: training draws large red triangles, never a small one.
HELD_OUT_OBJECTS = {("small", "red", "triangle"), ("large", "green", "circle"), ("small", "blue", "square"),
                    ("large", "yellow", "diamond"), ("small", "purple", "cross"), ("large", "white", "cross")}
HELD_OUT_ARRANGEMENTS = {
    ("circle", "left of", "triangle"), ("diamond", "left of", "square"),  # two shapes side by side
    ("square", "above", "cross"), ("triangle", "above", "circle"),  # two shapes stacked
    ("square", "in the top right corner"), ("cross", "at the bottom"),  # one shape in a place
}
SUPERSAMPLE = 4
VERSION = 3  # bump when a change draws different images: the cache is keyed by it
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class Shape:
    kind: str
    colour: str
    size: str
    x: float  # centre, as a fraction of the image width
    y: float
    r: float  # half-width, as a fraction of the image side

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


@dataclass
class Scene:
    shapes: list[Shape]  # left to right (row) or top to bottom (column)
    layout: str  # place | row | column
    place: str = ""  # for a lone shape

    def combinations(self) -> set[tuple]:
        """The objects (size, colour, kind) and the arrangement this scene shows."""
        found = {(s.size, s.colour, s.kind) for s in self.shapes}
        if self.layout == "place":
            found.add((self.shapes[0].kind, self.place))
        elif len(self.shapes) == 2:
            found.add((self.shapes[0].kind, "left of" if self.layout == "row" else "above", self.shapes[1].kind))
        return found

    def is_held_out(self) -> bool:
        return bool(self.combinations() & (HELD_OUT_OBJECTS | HELD_OUT_ARRANGEMENTS))

    def captions(self) -> list[str]:
        """Three phrasings of the one description."""
        p = [s.phrase() for s in self.shapes]
        if self.layout == "place":
            return [f"{p[0]} {self.place}", f"there is {p[0]} {self.place}", f"{self.place} there is {p[0]}"]
        if len(p) == 2:
            first, second = ("to the left of", "to the right of") if self.layout == "row" else ("above", "below")
            return [f"{p[0]} {first} {p[1]}", f"{p[1]} {second} {p[0]}", f"there is {p[0]} {first} {p[1]}"]
        forward, backward = ("left to right", "right to left") if self.layout == "row" else ("top to bottom",
                                                                                             "bottom to top")
        return [f"{p[0]} {p[1]} and {p[2]} from {forward}", f"from {forward} {p[0]} {p[1]} and {p[2]}",
                f"{p[2]} {p[1]} and {p[0]} from {backward}"]


def random_shape(rng: np.random.Generator, x: float, y: float) -> Shape:
    size = str(rng.choice(list(SIZES)))
    low, high = SIZES[size]
    return Shape(kind=str(rng.choice(KINDS)), colour=str(rng.choice(list(COLOURS))), size=size,
                 x=x, y=y, r=float(rng.uniform(low, high)))


def random_scene(rng: np.random.Generator) -> Scene:
    """One to three shapes, placed so that their layout is unmistakable."""
    n = int(rng.integers(1, 4))
    jitter = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731
    if n == 1:
        cell = int(rng.integers(9))
        row, col = divmod(cell, 3)
        shape = random_shape(rng, 0.2 + 0.3 * col + jitter(0.03), 0.2 + 0.3 * row + jitter(0.03))
        return Scene([shape], "place", PLACES[cell])
    layout = str(rng.choice(["row", "column"]))
    across = [0.27, 0.73] if n == 2 else [1 / 6, 1 / 2, 5 / 6]  # positions along the row / column
    along = float(rng.uniform(0.22, 0.78))  # where the row / column sits
    shapes = []
    for a in across:
        u, v = a + jitter(0.05 if n == 2 else 0.015), along + jitter(0.03)
        shapes.append(random_shape(rng, u, v) if layout == "row" else random_shape(rng, v, u))
    return Scene(shapes, layout)


def draw(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as an (image_size, image_size, 3) uint8 image."""
    side = image_size * SUPERSAMPLE
    background = tuple(int(c) for c in rng.integers(0, 60, size=3))
    canvas = Image.new("RGB", (side, side), background)
    pen = ImageDraw.Draw(canvas)
    for s in scene.shapes:
        colour = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in COLOURS[s.colour])
        x, y, r = s.x * side, s.y * side, s.r * side
        if s.kind == "circle":
            pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif s.kind == "square":
            h = 0.88 * r  # about the circle's area
            pen.rectangle((x - h, y - h, x + h, y + h), fill=colour)
        elif s.kind == "triangle":  # pointing up, centred on its bounding box
            pen.polygon([(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)], fill=colour)
        elif s.kind == "diamond":
            d = 1.1 * r
            pen.polygon([(x, y - d), (x + d, y), (x, y + d), (x - d, y)], fill=colour)
        elif s.kind == "cross":
            w = 0.36 * r
            pen.rectangle((x - r, y - w, x + r, y + w), fill=colour)
            pen.rectangle((x - w, y - r, x + w, y + r), fill=colour)
    small = np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float32)
    noisy = small + rng.normal(0.0, 6.0, size=small.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def generate(split: str, count: int, image_size: int, seed: int) -> tuple[np.ndarray, list[list[str]], list[dict]]:
    """`count` images of a split: (count, H, W, 3) uint8, three captions each, and the scenes.

    train keeps only scenes without a held-out combination; val and test keep
    only scenes with one. The same (split, count, image_size, seed) gives the
    same images, bit for bit.
    """
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    want_held_out = split != "train"
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    captions, scenes = [], []
    while len(scenes) < count:
        scene = random_scene(rng)
        if scene.is_held_out() != want_held_out:
            continue
        images[len(scenes)] = draw(scene, image_size, rng)
        captions.append(scene.captions())
        scenes.append(asdict(scene))
    return images, captions, scenes
