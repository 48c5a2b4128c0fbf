import numpy as np
import pytest
from bad_inputs import bad_files
from PIL import Image

from curation.imaging import decode_rgb, normalized_jpeg
from curation.stages.dag import load_config
from curation.stages.decode import DecodeStage

CASES = bad_files()


@pytest.fixture(scope="module")
def stage():
    return DecodeStage(load_config(None, []))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bad_or_odd_file_gets_its_outcome(stage, name):
    data, expected = CASES[name]
    info, reason = stage.validate(data)
    assert reason == expected, (name, info)
    if expected is None:
        # kept images decode to 8-bit RGB, and their shard bytes are a JPEG that PIL reads upright
        arr, scale = decode_rgb(data, min_side=224)
        assert arr.dtype == np.uint8 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 224
        jpg, scale = normalized_jpeg(data, info["format"], info["mode"], info["orientation"])
        with Image.open(__import__("io").BytesIO(jpg)) as im:
            assert im.format == "JPEG" and im.mode in ("RGB", "L") and scale == 1.0
            assert im.size == (info["width"], info["height"])
        # shard.resize: shorter side to 200, upright, one re-encode; smaller images untouched
        small, s2 = normalized_jpeg(data, info["format"], info["mode"], info["orientation"], resize=200)
        with Image.open(__import__("io").BytesIO(small)) as im:
            assert min(im.size) == min(200, info["width"], info["height"])
            assert s2 == min(1.0, 200 / min(info["width"], info["height"]))
            ratio = info["width"] / info["height"]
            assert abs(im.size[0] / im.size[1] - ratio) < 0.02


def test_exif_orientation_swaps_reported_size(stage):
    info, reason = stage.validate(CASES["rotated.jpg"][0])
    assert reason is None and (info["width"], info["height"]) == (480, 640) and info["orientation"] == 6


def test_modes_are_recorded(stage):
    assert stage.validate(CASES["cmyk.jpg"][0])[0]["mode"] == "CMYK"
    assert stage.validate(CASES["sixteen.png"][0])[0]["mode"].startswith("I")
    assert stage.validate(CASES["alpha.png"][0])[0]["mode"] == "RGBA"
    assert stage.validate(CASES["photo.webp"][0])[0]["format"] == "WEBP"


def test_alpha_is_composited_on_white_not_black():
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    buf = __import__("io").BytesIO()
    im.save(buf, format="PNG")
    arr, _ = decode_rgb(buf.getvalue())
    assert arr.mean() > 250


def test_reduced_decode_never_goes_below_requested_side():
    import skimage.data

    buf = __import__("io").BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize((2048, 1536)).save(buf, format="JPEG")
    arr, scale = decode_rgb(buf.getvalue(), min_side=300)
    assert min(arr.shape[:2]) >= 300 and arr.shape[1] < 2048  # DCT-scaled, not full size
    assert abs(arr.shape[1] * scale - 2048) < 1e-6


def test_classification_survives_ultralytics_patching_pil(stage):
    """ultralytics monkeypatches Image.open; a non-image must still be not_an_image, not corrupt."""
    import ultralytics.utils.patches  # noqa: F401 - applies the patch

    assert stage.validate(CASES["text.jpg"][0])[1] == "not_an_image"
