"""Image decoding: every format against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import corrupt, save_dicom, save_png
from PIL import Image

from cxrbench.datasets.imageio import ImageReadError, is_dicom, read_image


def test_png_8bit_exact(tmp_path):
    a = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
    img = read_image(save_png(tmp_path / "a.png", a))
    assert img.dtype == np.float32 and img.shape == (2, 3)
    np.testing.assert_allclose(img, a / 255.0, atol=1e-7)


def test_png_16bit_uses_full_code_range(tmp_path):
    a = np.array([[0, 1, 4095], [32768, 65534, 65535]], dtype=np.uint16)
    p = save_png(tmp_path / "a16.png", a)
    assert Image.open(p).mode.startswith("I")
    np.testing.assert_allclose(read_image(p), a / 65535.0, atol=1e-7)


def test_rgb_to_grey_luma(tmp_path):
    a = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    img = read_image(save_png(tmp_path / "rgb.png", a))
    want = [0.299, 0.587, 0.114, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255]
    np.testing.assert_allclose(img[0], want, atol=1e-6)


def test_rgba_composited_over_black(tmp_path):
    a = np.array([[[255, 255, 255, 255], [255, 255, 255, 128], [200, 200, 200, 0]]], dtype=np.uint8)
    img = read_image(save_png(tmp_path / "rgba.png", a))
    np.testing.assert_allclose(img[0], [1.0, 128 / 255, 0.0], atol=1e-6)


def test_grey_alpha_and_palette(tmp_path):
    la = Image.fromarray(np.array([[[200, 255], [200, 0]]], dtype=np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png")[0], [200 / 255, 0.0], atol=1e-6)
    p = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)).convert("P")
    p.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png")[0], [0.0, 1.0], atol=1e-6)


def test_jpeg_and_reduced_decode(tmp_path):
    yy, xx = np.mgrid[:512, :512]
    a = ((xx + yy) / 4).astype(np.uint8)  # smooth: JPEG keeps it within a few levels
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=100)
    full = read_image(tmp_path / "a.jpg")
    assert full.shape == (512, 512)
    assert np.abs(full - a / 255.0).max() < 3 / 255
    # DCT scaling: the smallest power-of-two reduction still >= the hint
    assert read_image(tmp_path / "a.jpg", size_hint=(64, 64)).shape == (64, 64)
    assert read_image(tmp_path / "a.jpg", size_hint=(100, 100)).shape == (128, 128)
    # PNGs ignore the hint (always full size)
    assert read_image(save_png(tmp_path / "b.png", a), size_hint=(64, 64)).shape == (512, 512)


# -- DICOM ------------------------------------------------------------------------------------
def test_dicom_window_linear(tmp_path):
    # LINEAR window (PS3.3 C.11.2.1.2.1), c=2048 w=1024 on 12-bit data:
    # x <= 1536 -> 0, x > 2559 -> 1, else (x - 2047.5) / 1023 + 0.5
    x = np.array([[0, 1536, 2048], [2559, 4095, 3000]], dtype=np.uint16)
    p = save_dicom(tmp_path / "w.dcm", x, center=2048, width=1024)
    want = [[0, 0, 0.5 / 1023 + 0.5], [1.0, 1.0, 1.0]]
    np.testing.assert_allclose(read_image(p), want, atol=1e-6)


def test_dicom_rescale_then_window(tmp_path):
    # modality value v = 2x - 1024; window c=0 w=2001 -> (v + 0.5) / 2000 + 0.5 inside
    x = np.array([[0, 312, 512, 712, 1100]], dtype=np.uint16)
    p = save_dicom(tmp_path / "r.dcm", x, slope=2.0, intercept=-1024.0, center=0, width=2001)
    v = 2.0 * x[0] - 1024
    want = np.clip((v + 0.5) / 2000 + 0.5, 0, 1)
    want[0], want[-1] = 0.0, 1.0
    np.testing.assert_allclose(read_image(p)[0], want, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    x = np.array([[0, 1536, 2048], [2559, 4095, 3000]], dtype=np.uint16)
    m2 = read_image(save_dicom(tmp_path / "m2.dcm", x, center=2048, width=1024))
    m1 = read_image(save_dicom(tmp_path / "m1.dcm", x, center=2048, width=1024,
                               photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    # without a window: min..max of the modality values, then inverted
    y = np.array([[100, 200, 300]], dtype=np.uint16)
    np.testing.assert_allclose(read_image(save_dicom(tmp_path / "n2.dcm", y))[0], [0, 0.5, 1])
    np.testing.assert_allclose(
        read_image(save_dicom(tmp_path / "n1.dcm", y, photometric="MONOCHROME1"))[0], [1, 0.5, 0])


def test_dicom_voi_lut_sequence(tmp_path):
    x = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)  # 9 is past the LUT: clamps to the last entry
    p = save_dicom(tmp_path / "lut.dcm", x, voi_lut=[0, 64, 128, 255], lut_bits=8)
    np.testing.assert_allclose(read_image(p)[0], [0, 64 / 255, 128 / 255, 1, 1], atol=1e-6)


def test_dicom_signed_and_multiframe(tmp_path):
    s = np.array([[-1000, 0, 1000]], dtype=np.int16)
    np.testing.assert_allclose(read_image(save_dicom(tmp_path / "s.dcm", s, signed=True))[0],
                               [0, 0.5, 1], atol=1e-6)
    frames = np.stack([np.array([[0, 10]]), np.array([[10, 0]])]).astype(np.uint16)
    img = read_image(save_dicom(tmp_path / "mf.dcm", frames, frames=2))
    np.testing.assert_allclose(img, [[0, 1]])


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    p = save_dicom(tmp_path / "scan.dcm", np.array([[0, 5]], dtype=np.uint16))
    q = p.rename(tmp_path / "IM0001")
    assert is_dicom(q)
    np.testing.assert_allclose(read_image(q), [[0, 1]])


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ["truncated", "garbage", "empty", "missing", "bad_dicom"])
def test_unreadable_files_raise_naming_the_file(tmp_path, make):
    p = tmp_path / ("x.dcm" if make == "bad_dicom" else "x.png")
    if make == "truncated":
        corrupt(save_png(p, np.full((64, 64), 7, np.uint8)))
    elif make == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
    elif make == "empty":
        p.write_bytes(b"")
    elif make == "bad_dicom":
        p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    with pytest.raises(ImageReadError) as ei:
        read_image(p)
    assert str(p) in str(ei.value)
    assert ei.value.path == str(p)
    assert isinstance(ei.value, ValueError)  # the CLI prints ValueErrors as one-line errors
