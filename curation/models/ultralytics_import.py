"""Importing ultralytics safely: its own module because both the weight finder and the YOLO
wrapper need it, and neither should import the other for it."""

from __future__ import annotations

import os


def import_ultralytics():
    """Import ultralytics without its side effects on the rest of the process.

    ultralytics patches `PIL.Image.open` process-wide: on any file PIL cannot identify it tries to
    pip-install `pi-heif` and retry. In a worker that also decodes crawl bytes, a broken image would
    trigger an install attempt instead of a clean "not_an_image". We mark its HEIF plugin as done,
    so the patch calls PIL's own `open`, and switch off its auto-install in this process.
    """
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import ultralytics
    from ultralytics.utils import patches

    patches._pil_plugins_registered = True
    return ultralytics
