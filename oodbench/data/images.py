"""The one image-size limit of the benchmark: every reader refuses the same images.

PIL's own guard warns above ``Image.MAX_IMAGE_PIXELS`` (~89.5 Mpx) and raises only
above twice that, so a reader relying on PIL alone (``oodbench predict``) accepted
images that materialize refused. Here the limit is PIL's default, checked from the
header before any pixel is decoded, so a decompression bomb costs a header read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from oodbench.core.errors import DataError

#: PIL's default (~89.5 Mpx, ~0.27 GB as RGB)
MAX_PIXELS = 89_478_485

# Every reader refuses such images itself (too_large) with a message naming the file;
# PIL's warning for the same images would only add lines of noise before that error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def too_large(image: Image.Image, limit: int | None = None) -> str | None:
    """Why an opened (header-only) image is refused, or None when it is within `limit`
    (default MAX_PIXELS)."""
    limit = MAX_PIXELS if limit is None else limit
    width, height = image.size
    if width * height > limit:
        return f"too large ({width}x{height} > {limit} pixels)"
    return None


def open_checked(path: Path) -> Image.Image:
    """The decoded image at `path` (a copy; the file is closed), or a DataError naming it:
    unreadable, not an image, or over MAX_PIXELS."""
    try:
        with Image.open(path) as image:
            if reason := too_large(image):
                raise DataError(
                    f"{path}: {reason}; resize it (the limit guards against decompression bombs)"
                )
            image.load()
            return image.copy()
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: too large (> {MAX_PIXELS} pixels; {err})") from err
    except OSError as err:  # includes UnidentifiedImageError and truncated files
        raise DataError(f"{path}: cannot read image ({err})") from err
