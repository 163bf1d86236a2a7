"""Photos bundled with accentuate, for demos, tests and documentation.

All are public domain or CC0, taken from scikit-image's sample data
(``skimage.data``): ``chelsea`` (a cat, Stefan van der Walt), ``coffee`` (an
espresso, Rachel Michetti), ``motorcycle`` (Middlebury stereo set), ``astronaut``
(Eileen Collins, NASA), ``rocket`` (a launch, NASA) and ``hubble`` (the Hubble
Deep Field, NASA; reduced to 600 px), re-encoded as JPEG.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

__all__ = ["PHOTOS", "photo"]

#: Name -> file name of each bundled photo.
PHOTOS = {
    "chelsea": "chelsea.jpg",
    "coffee": "coffee.jpg",
    "motorcycle": "motorcycle.jpg",
    "astronaut": "astronaut.jpg",
    "rocket": "rocket.jpg",
    "hubble": "hubble.jpg",
}


def photo(name: str = "chelsea") -> Path:
    """Path of a bundled photo (see :data:`PHOTOS`).

    Example:
        >>> photo("coffee").name
        'coffee.jpg'
    """
    if name not in PHOTOS:
        close = difflib.get_close_matches(name, list(PHOTOS), n=3)
        raise KeyError(f"no bundled photo {name!r}; choose one of {', '.join(PHOTOS)}"
                       + (f" (closest: {', '.join(close)})" if close else ""))
    return Path(str(resources.files("accentuate").joinpath("data", PHOTOS[name])))
