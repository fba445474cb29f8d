"""Real face photos that ship inside installed packages (no download, no shared data).

The demo runs and the trainer's self-built tiny dataset need real faces on any machine:
scikit-image's astronaut, insightface's Tom Hanks portrait and its group photo ``t1.jpg``
(six faces of about 100 px). One definition of where they are, for every user of them.
"""
from __future__ import annotations

from pathlib import Path

from .errors import MissingModelError
from .model_folders import default_cache_dir

PHOTOS = {  # name -> (package, where, identity folder used by a packaged dataset)
    "astronaut": ("scikit-image", "skimage.data.astronaut()", "astronaut"),
    "tom_hanks": ("insightface", "insightface/data/images/Tom_Hanks_54745.png", "tom_hanks"),
    "group": ("insightface", "insightface/data/images/t1.jpg", "group"),
}
_INSIGHTFACE_FILES = {"tom_hanks": "Tom_Hanks_54745.png", "group": "t1.jpg"}


def packaged_photo(name: str) -> Path:
    """The file of one packaged photo (the astronaut is written once to the cache as PNG)."""
    if name not in PHOTOS:
        raise KeyError(f"unknown packaged photo {name!r}; known: {', '.join(PHOTOS)}")
    package, where, _ident = PHOTOS[name]
    try:
        if name == "astronaut":
            import skimage.data

            out = default_cache_dir() / "photos" / "astronaut.png"
            if not out.is_file():
                from PIL import Image

                from .io_utils import atomic_save_png

                atomic_save_png(Image.fromarray(skimage.data.astronaut()), out)
            return out
        import insightface

        path = Path(insightface.__file__).parent / "data" / "images" / _INSIGHTFACE_FILES[name]
    except ImportError:
        raise MissingModelError(f"the packaged photo {name!r} ({where}) needs the {package} package; "
                                f"install it with pip") from None
    if not path.is_file():
        raise MissingModelError(f"the packaged photo {name!r} is missing from this {package} install ({path})")
    return path


def packaged_identity_folders(dest: Path) -> Path:
    """``dest/<identity>/<photo>`` for every packaged photo whose package is installed (a tiny dataset)."""
    dest = Path(dest)
    found = 0
    for name, (_package, _where, ident) in PHOTOS.items():
        try:
            src = packaged_photo(name)
        except MissingModelError:
            continue
        target = dest / ident / src.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
        found += 1
    if not found:
        raise MissingModelError("no packaged face photos found (install scikit-image or insightface)")
    return dest
