"""The Python binding against the library: the demo models, every input path, callbacks,
cancellation, errors, batches and threads."""
import pathlib
import threading

import numpy as np
import pytest

import ibex

ROOT = pathlib.Path(__file__).resolve().parents[3]
CNN = ROOT / "models" / "efficientnet-lite0"
CLIP = ROOT / "models" / "fmnist-clip"
CAT = ROOT / "examples" / "images" / "chelsea.png"
ITEMS = ROOT / "examples" / "images" / "four_items.png"


def pixels(path):
    """The decoded RGB pixels of a file, through the library (no Pillow needed)."""
    with ibex.Image(path) as img:
        v, _ = img._view()
        buf = (np.ctypeslib.as_array((ibex.ctypes.c_uint8 * v.data_len).from_address(v.data)))
        rows = buf[: v.height * v.row_stride].reshape(v.height, v.row_stride)
        return rows[:, : v.width * 3].reshape(v.height, v.width, 3).copy()


@pytest.fixture(scope="module")
def cnn():
    with ibex.Model(CNN) as m:
        yield m


@pytest.fixture(scope="module")
def clip():
    with ibex.Model(CLIP, kind="clip") as m:
        yield m


def test_version_and_abi():
    assert ibex.ABI_VERSION == ibex._lib.ibex_abi_version() == 1
    assert ibex.version().startswith("0.")


def test_gradcam_from_file_array_and_strided_buffer_agree(cnn):
    with ibex.Explainer(cnn, "gradcam") as ex:
        with ex.explain(CAT) as r:
            maps = r.maps
            meta = r.json
            region = r.source_region
        assert maps[0].data.shape == (maps[0].height, maps[0].width)
        assert maps[0].data.dtype == np.float32 and np.isfinite(maps[0].data).all()
        assert meta["target"]["index"] == meta["top5"][0]["index"]  # the predicted class
        assert region[2] > region[0] and region[3] > region[1]
        px = pixels(CAT)
        with ex.explain(px) as r2:
            assert np.array_equal(r2.maps[0].data, maps[0].data)
        # a row stride wider than the row (a crop of a wider buffer), passed without a copy
        wide = np.zeros((px.shape[0], px.shape[1] + 7, 3), np.uint8)
        wide[:, : px.shape[1]] = px
        with ex.explain(wide[:, : px.shape[1]]) as r3:
            assert np.array_equal(r3.maps[0].data, maps[0].data)
        # float32 in [0, 1] and uint16 carry the same values, but only 8-bit input is resized
        # with Pillow's 8-bit rounding: close maps, not identical ones
        for arr in ((px / 255.0).astype(np.float32), px.astype(np.uint16) * 257):
            with ex.explain(arr) as r4:
                assert np.corrcoef(r4.maps[0].data.ravel(), maps[0].data.ravel())[0, 1] > 0.99


def test_m2ib_tokens_similarity_progress_and_overlay(clip, tmp_path):
    seen = []
    with ibex.Explainer(clip, "m2ib", steps=3) as ex:
        with ex.explain(ITEMS, texts=["a sandal", "a bag"], progress=lambda d, t: seen.append((d, t)) or True) as r:
            assert r.text_count == 2
            toks = r.tokens(0)
            assert any("sandal" in t for t, _ in toks)
            assert -1.0 <= r.similarity(1) <= 1.0
            names = [m.name for m in r.maps]
            assert "image" in names and "text" in names
            out = tmp_path / "o.png"
            r.save_overlay(out)
            assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cancel_from_another_thread_and_from_the_callback(clip):
    token = ibex.CancelToken()
    with ibex.Explainer(clip, "m2ib", steps=200) as ex:
        started = threading.Event()

        def progress(done, total):
            started.set()
            return True

        threading.Thread(target=lambda: (started.wait(30), token.cancel())).start()
        with pytest.raises(ibex.Cancelled) as e:
            ex.explain(ITEMS, texts="a sandal", progress=progress, cancel=token)
        assert e.value.status == 7
        token.reset()
        with pytest.raises(ibex.Cancelled):
            ex.explain(ITEMS, texts="a sandal", progress=lambda d, t: d < 2)
        # an exception in the callback stops the call and comes back as itself
        with pytest.raises(ZeroDivisionError):
            ex.explain(ITEMS, texts="a sandal", progress=lambda d, t: 1 / 0)
    token.close()


def test_errors_are_python_errors_with_the_library_message(cnn, tmp_path):
    with pytest.raises(ibex.IbexError) as e:
        ibex.Explainer(cnn, "no-such-method")
    assert e.value.status_name == "UNSUPPORTED" and "no-such-method" in e.value.message
    with pytest.raises(ibex.IbexError) as e:
        ibex.Explainer(cnn, "iba", no_such_option=1)
    assert "no_such_option" in str(e.value)
    with pytest.raises(ibex.IbexError) as e:
        ibex.Model(tmp_path / "missing")
    assert e.value.status_name in ("NOT_FOUND", "IO")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(ibex.IbexError):
        ibex.Image(bad)
    with ibex.Explainer(cnn, "gradcam") as ex:
        with pytest.raises(TypeError):
            ex.explain(np.zeros((32, 32, 3), np.int64))
        with pytest.raises(ValueError):
            ex.explain(np.zeros((32, 32, 2), np.uint8))
        with pytest.raises(ibex.IbexError) as e:
            ex.explain(np.zeros((8, 8, 3), np.uint8))  # below the smallest side
        assert e.value.status == 1
        with pytest.raises(ibex.IbexError):
            ex.explain(CAT, target=5000)
        # non-contiguous (every other column): copied, same result as the contiguous copy
        px = pixels(CAT)
        with ex.explain(px[:, ::2]) as a, ex.explain(np.ascontiguousarray(px[:, ::2])) as b:
            assert np.array_equal(a.maps[0].data, b.maps[0].data)
    ex.close()
    with pytest.raises(ibex.IbexError) as e:
        ex.explain(CAT)
    assert "closed" in str(e.value)


def test_batch_equals_single_calls(cnn):
    with ibex.Explainer(cnn, "gradcam") as ex:
        imgs = [CAT, ITEMS, pixels(CAT)[:100, :120]]
        batch = ex.explain_batch(imgs, target=281)
        for img, r in zip(imgs, batch):
            with ex.explain(img, target=281) as single:
                assert np.array_equal(single.maps[0].data, r.maps[0].data)
            r.close()


def test_four_threads_share_one_model(cnn):
    with ibex.Explainer(cnn, "gradcam") as ex, ex.explain(CAT) as r:
        want = r.maps[0].data
    results, errors = [None] * 4, []

    def work(i):
        try:
            with ibex.Explainer(cnn, "gradcam") as ex, ex.explain(CAT) as r:
                results[i] = r.maps[0].data
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(np.array_equal(x, want) for x in results)


DICOM = ROOT.parent / "shared" / "fixtures" / "images" / "dicom"


def test_dicom_in_and_derived_objects_out(cnn):
    ct = DICOM / "CT_small.dcm"
    with ibex.Image.dicom(ct, window=(40, 400)) as img:
        info = img.dicom_info
        assert (info["rows"], info["columns"], info["modality"]) == (128, 128, "CT")
        assert info["window_center"] == 40 and info["pixel_spacing"][0] > 0
        with ibex.Explainer(cnn, "gradcam") as ex, ex.explain(img) as r:
            pm = r.to_dicom(img)
            sc = r.to_dicom(img, "secondary_capture")
            assert pm[128:132] == b"DICM" and sc[128:132] == b"DICM" and len(pm) > 128 * 128 * 4
            png = r.overlay_png(original=img)
            assert png[:4] == b"\x89PNG"
            with pytest.raises(ValueError):
                r.to_dicom(img, "hologram")
    # the same file from memory, and a frame of a multi-frame file
    with ibex.Image.dicom(ct.read_bytes(), window=(40, 400)) as a, ibex.Image.dicom(ct, window=(40, 400)) as b:
        assert a.pixels.dtype == np.float32 and a.pixels.shape == (128, 128, 3)
        assert np.array_equal(a.pixels, b.pixels)
    with ibex.Image.dicom(DICOM / "emri_small.dcm", frame=9) as img:
        assert img.dicom_info["frame"] == 9
    with pytest.raises(ibex.IbexError) as e:
        ibex.Image.dicom(DICOM / "emri_small.dcm", frame=10)
    assert "frame 10 requested" in e.value.message
    with pytest.raises(ibex.IbexError) as e:
        ibex.Image.dicom(DICOM / "corrupt" / "corrupt_bad_length_MR_small.dcm")
    assert e.value.status_name == "FORMAT"
    with ibex.Image(CAT) as png, pytest.raises(ibex.IbexError):
        png.dicom_info
