"""IMAGE tensor <-> uint8 conversions, on the real astronaut photo and on bad inputs."""

import numpy as np
import pytest
import torch
from skimage import data

from genaffect.models.errors import GenAffectInputError
from genaffect.models.images import (
    image_batch_to_rgb_uint8,
    rgb_to_bgr,
    rgb_uint8_to_image_batch,
)


def test_uint8_round_trip_through_image_tensor_is_exact_on_a_real_photo():
    photo = data.astronaut()
    tensor = rgb_uint8_to_image_batch([photo])
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 512, 512, 3)
    back = image_batch_to_rgb_uint8(tensor)[0]
    assert np.array_equal(back, photo)


def test_bgr_swap_reverses_channels_and_is_contiguous_for_insightface():
    photo = data.astronaut()
    bgr = rgb_to_bgr(photo)
    assert bgr.flags["C_CONTIGUOUS"]
    assert np.array_equal(bgr[..., 0], photo[..., 2]) and np.array_equal(bgr[..., 2], photo[..., 0])
    assert np.array_equal(rgb_to_bgr(bgr), photo)


def test_grayscale_and_gray_alpha_images_become_rgb():
    gray = torch.rand(2, 16, 16, 1)
    frames = image_batch_to_rgb_uint8(gray)
    assert frames[0].shape == (16, 16, 3)
    assert np.array_equal(frames[0][..., 0], frames[0][..., 2])
    gray_alpha = torch.cat([gray, torch.ones_like(gray)], dim=-1)
    assert np.array_equal(image_batch_to_rgb_uint8(gray_alpha)[1], frames[1])


def test_rgba_alpha_is_dropped():
    rgb = torch.rand(1, 8, 8, 3)
    rgba = torch.cat([rgb, torch.zeros(1, 8, 8, 1)], dim=-1)
    assert np.array_equal(image_batch_to_rgb_uint8(rgba)[0], image_batch_to_rgb_uint8(rgb)[0])


def test_single_image_without_batch_dimension_is_accepted():
    assert len(image_batch_to_rgb_uint8(torch.rand(8, 8, 3))) == 1


def test_nan_pixels_are_an_error_naming_the_image():
    images = torch.rand(3, 8, 8, 3)
    images[2, 0, 0, 0] = float("nan")
    with pytest.raises(GenAffectInputError, match=r"image\(s\) \[2\].*NaN"):
        image_batch_to_rgb_uint8(images)


def test_empty_batch_is_an_error():
    with pytest.raises(GenAffectInputError, match="empty"):
        image_batch_to_rgb_uint8(torch.zeros(0, 8, 8, 3))


def test_wrong_channel_count_and_rank_are_errors():
    with pytest.raises(GenAffectInputError, match="5 channels"):
        image_batch_to_rgb_uint8(torch.rand(1, 8, 8, 5))
    with pytest.raises(GenAffectInputError, match="shape"):
        image_batch_to_rgb_uint8(torch.rand(8, 8))
    with pytest.raises(GenAffectInputError, match="IMAGE tensor"):
        image_batch_to_rgb_uint8(np.zeros((1, 8, 8, 3)))


def test_rounding_just_outside_0_1_is_clipped():
    frames = image_batch_to_rgb_uint8(torch.tensor([[[[-0.01, 0.5, 1.01]]]]))
    assert frames[0].tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize("image, message", [
    (torch.full((1, 8, 8, 3), 200.0), r"run from 200 to 200; ComfyUI's IMAGE is 0\.\.1\. It looks like 0\.\.255"),
    (torch.linspace(-1, 1, 192).view(1, 8, 8, 3), r"from -1 to 1.*-1\.\.1 image: map it with \(x \+ 1\) / 2"),
    (torch.full((1, 8, 8, 3), 128, dtype=torch.uint8), "holds torch.uint8 values; ComfyUI's IMAGE is float 0..1"),
], ids=["0-255 floats", "-1..1", "uint8"])
def test_images_outside_0_1_are_refused_saying_what_was_received_never_turned_white(image, message):
    with pytest.raises(GenAffectInputError, match=message):
        image_batch_to_rgb_uint8(image, "reference")


def test_frames_of_different_sizes_cannot_form_one_batch():
    with pytest.raises(GenAffectInputError, match="differ in size"):
        rgb_uint8_to_image_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)])


@pytest.mark.parametrize("shape", [(1, 0, 0, 3), (1, 64, 0, 3), (1, 0, 64, 3), (2, 0, 0, 3)])
def test_an_image_without_pixels_is_refused_naming_the_input(shape):
    with pytest.raises(GenAffectInputError, match=r"^Face Metrics images: the images are \d+x\d+ pixels, empty"):
        image_batch_to_rgb_uint8(torch.zeros(shape), what="Face Metrics images")


def test_a_photo_file_that_cannot_be_read_is_refused_naming_it(tmp_path):
    """Damaged, truncated, not an image, or a decompression bomb: the tools over folders of photos report it and go on."""
    import io
    import struct
    import zlib

    from genaffect.models.images import read_photo
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buffer.getvalue()[:5000])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)  # 400 million pixels claimed, a few bytes stored
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                                        + chunk(b"IEND", b""))
    for name in ("truncated.jpg", "empty.png", "text.png", "bomb.png"):
        with pytest.raises(GenAffectInputError, match=f"{name} is not a readable image"):
            read_photo(str(tmp_path / name))
    Image.fromarray(data.astronaut()).save(tmp_path / "good.png")
    assert np.array_equal(read_photo(str(tmp_path / "good.png")), data.astronaut())


def test_a_photo_is_read_upright_by_its_exif_orientation_as_load_image_shows_it(tmp_path):
    from genaffect.models.images import read_photo
    from PIL import Image

    wide = np.zeros((40, 60, 3), np.uint8)
    wide[:, :20] = 255  # white on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show": a phone photo taken upright
    Image.fromarray(wide).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = read_photo(str(tmp_path / "phone.jpg"))
    assert upright.shape == (60, 40, 3)
    assert upright[:20].mean() > 200 and upright[25:].mean() < 50  # the stored left edge is now the top


def test_a_photo_over_the_pixel_cap_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    from genaffect.models.errors import PhotoTooLargeError
    from genaffect.models.images import read_photo
    from PIL import Image

    Image.new("1", (3000, 2000)).save(tmp_path / "big.png")
    decoded = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or original(self))
    with pytest.raises(PhotoTooLargeError, match=r"big.png is 3000x2000 pixels; at most 5,000,000 are read"):
        read_photo(str(tmp_path / "big.png"), max_pixels=5_000_000)
    assert not decoded
    assert read_photo(str(tmp_path / "big.png"), max_pixels=6_000_000).shape == (2000, 3000, 3)
