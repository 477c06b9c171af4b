"""Python binding of ibex: information-bottleneck explanations (M2IB, IBA, Dual-IB, PIP-Net,
Grad-CAM, …) through ibex's C ABI (``include/ibex.h``), with NumPy arrays in and out.

A thin layer: every call goes to the shared library ``libibex.so``; no method logic lives here.
The library is found through ``IBEX_LIBRARY`` (a path to the file), next to this package, or in
the repository's ``target/release`` / ``target/debug`` when run from a checkout.

    import ibex
    with ibex.Model("models/efficientnet-lite0") as model, ibex.Explainer(model, "gradcam") as ex:
        with ex.explain("examples/images/chelsea.png", progress=lambda done, total: True) as result:
            heat = result.maps[0].data          # float32 array, height × width
            result.save_overlay("cat.png")

ctypes releases the GIL during every library call, so explanations on several threads (one
model, an explainer per thread) run in parallel.
"""
from __future__ import annotations

import ctypes
import json as _json
import os
import pathlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "ABI_VERSION", "IbexError", "Cancelled", "Model", "Explainer", "CancelToken", "Image", "Result", "Map",
    "version", "set_log_callback",
]

#: The C ABI version this binding was written for (``IBEX_ABI_VERSION``).
ABI_VERSION = 1

_STATUS = {
    0: "OK", 1: "INVALID_ARGUMENT", 2: "NULL_POINTER", 3: "IO", 4: "FORMAT", 5: "NOT_FOUND", 6: "UNSUPPORTED",
    7: "CANCELLED", 8: "NUMERICAL", 9: "BACKEND", 10: "BUFFER_TOO_SMALL", 11: "OUT_OF_RANGE", 12: "PANIC",
}


class IbexError(Exception):
    """A failed ibex call: ``status`` is the C status code, ``status_name`` its name, and the
    message is the library's own."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{_STATUS.get(status, status)}: {message}")
        self.status = status
        self.status_name = _STATUS.get(status, str(status))
        self.message = message


class Cancelled(IbexError):
    """The call was cancelled (cancel token, or the progress callback returned False)."""


# --- the library ------------------------------------------------------------------------------

class _View(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("width", ctypes.c_uint32), ("height", ctypes.c_uint32),
                ("row_stride", ctypes.c_uint32), ("pixel_type", ctypes.c_int32), ("layout", ctypes.c_int32),
                ("data", ctypes.c_void_p), ("data_len", ctypes.c_size_t)]


class _Target(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("class_index", ctypes.c_int32), ("text", ctypes.c_char_p),
                ("texts", ctypes.POINTER(ctypes.c_char_p)), ("text_count", ctypes.c_uint32)]


_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)
_LOG = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)


class _Control(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("progress", _PROGRESS), ("user", ctypes.c_void_p),
                ("cancel", ctypes.c_void_p)]


class _MapInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("width", ctypes.c_uint32), ("height", ctypes.c_uint32),
                ("text_index", ctypes.c_int32), ("name", ctypes.c_char_p), ("units", ctypes.c_char_p),
                ("min_value", ctypes.c_float), ("max_value", ctypes.c_float)]


class _DicomOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("frame", ctypes.c_uint32), ("window_index", ctypes.c_int32),
                ("use_window", ctypes.c_int32), ("window_center", ctypes.c_double), ("window_width", ctypes.c_double),
                ("max_samples", ctypes.c_uint64)]


class _DicomInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("rows", ctypes.c_uint32), ("columns", ctypes.c_uint32),
                ("frames", ctypes.c_uint32), ("frame", ctypes.c_uint32), ("samples_per_pixel", ctypes.c_uint32),
                ("bits_allocated", ctypes.c_uint32), ("bits_stored", ctypes.c_uint32),
                ("has_pixel_spacing", ctypes.c_int32), ("pixel_spacing", ctypes.c_double * 2),
                ("has_image_position", ctypes.c_int32), ("image_position", ctypes.c_double * 3),
                ("has_image_orientation", ctypes.c_int32), ("image_orientation", ctypes.c_double * 6),
                ("rescale_slope", ctypes.c_double), ("rescale_intercept", ctypes.c_double),
                ("has_window", ctypes.c_int32), ("window_center", ctypes.c_double), ("window_width", ctypes.c_double),
                ("sop_class_uid", ctypes.c_char * 65), ("sop_instance_uid", ctypes.c_char * 65),
                ("series_instance_uid", ctypes.c_char * 65), ("study_instance_uid", ctypes.c_char * 65),
                ("frame_of_reference_uid", ctypes.c_char * 65), ("transfer_syntax_uid", ctypes.c_char * 65),
                ("modality", ctypes.c_char * 17), ("photometric_interpretation", ctypes.c_char * 17)]


def _candidates() -> Iterable[pathlib.Path]:
    env = os.environ.get("IBEX_LIBRARY")
    if env:
        yield pathlib.Path(env)
        return
    here = pathlib.Path(__file__).resolve().parent
    yield here / "libibex.so"
    root = here.parents[2]  # bindings/python/ibex -> repository root
    for profile in ("release", "debug"):
        yield root / "target" / profile / "libibex.so"


def _load() -> ctypes.CDLL:
    tried = []
    for p in _candidates():
        tried.append(str(p))
        if p.is_file():
            lib = ctypes.CDLL(str(p))
            break
    else:
        raise ImportError("libibex.so not found (set IBEX_LIBRARY to its path); tried: " + ", ".join(tried))
    P, c = ctypes.c_void_p, ctypes
    sigs = {
        "ibex_abi_version": ([], c.c_uint32),
        "ibex_version_string": ([], c.c_char_p),
        "ibex_last_error_message": ([], c.c_char_p),
        "ibex_status_string": ([c.c_int32], c.c_char_p),
        "ibex_cancel_token_create": ([c.POINTER(P)], c.c_int32),
        "ibex_cancel_token_cancel": ([P], c.c_int32),
        "ibex_cancel_token_reset": ([P], c.c_int32),
        "ibex_cancel_token_free": ([P], None),
        "ibex_explain": ([P, c.POINTER(_View), c.POINTER(_Target), c.POINTER(_Control), c.POINTER(P)], c.c_int32),
        "ibex_explain_batch": ([P, c.POINTER(_View), c.c_uint32, c.POINTER(_Target), c.POINTER(_Control),
                                c.POINTER(P)], c.c_int32),
        "ibex_image_load_file": ([c.c_char_p, c.POINTER(P)], c.c_int32),
        "ibex_image_get_view": ([P, c.POINTER(_View)], c.c_int32),
        "ibex_image_free": ([P], None),
        "ibex_set_log_callback": ([_LOG, c.c_int32, P], c.c_int32),
        "ibex_model_load": ([c.c_char_p, c.c_char_p, P, c.POINTER(P)], c.c_int32),
        "ibex_model_free": ([P], None),
        "ibex_explainer_create": ([P, c.c_char_p, P, c.POINTER(P)], c.c_int32),
        "ibex_explainer_free": ([P], None),
        "ibex_options_from_json": ([c.c_char_p, c.POINTER(P)], c.c_int32),
        "ibex_options_free": ([P], None),
        "ibex_render_overlay_png": ([P, c.c_uint32, c.c_char_p, c.c_float, c.c_char_p], c.c_int32),
        "ibex_result_free": ([P], None),
        "ibex_result_map_count": ([P, c.POINTER(c.c_uint32)], c.c_int32),
        "ibex_result_map_info": ([P, c.c_uint32, c.POINTER(_MapInfo)], c.c_int32),
        "ibex_result_copy_map": ([P, c.c_uint32, c.POINTER(c.c_float), c.c_size_t, c.POINTER(c.c_size_t)],
                                 c.c_int32),
        "ibex_result_text_count": ([P, c.POINTER(c.c_uint32)], c.c_int32),
        "ibex_result_similarity": ([P, c.c_uint32, c.POINTER(c.c_float)], c.c_int32),
        "ibex_result_token_count": ([P, c.c_uint32, c.POINTER(c.c_uint32)], c.c_int32),
        "ibex_result_token": ([P, c.c_uint32, c.c_uint32, c.POINTER(c.c_char_p), c.POINTER(c.c_float)], c.c_int32),
        "ibex_result_json": ([P, c.POINTER(c.c_char_p)], c.c_int32),
        "ibex_result_source_region": ([P, c.POINTER(c.c_float)], c.c_int32),
        "ibex_image_load_dicom": ([c.c_char_p, c.POINTER(_DicomOptions), c.POINTER(P)], c.c_int32),
        "ibex_image_load_dicom_memory": ([c.c_char_p, c.c_size_t, c.c_char_p, c.POINTER(_DicomOptions), c.POINTER(P)],
                                         c.c_int32),
        "ibex_image_dicom_info": ([P, c.POINTER(_DicomInfo)], c.c_int32),
        "ibex_result_to_dicom": ([P, P, c.c_uint32, c.c_int32, c.c_char_p, c.c_float, c.POINTER(P)], c.c_int32),
        "ibex_render_overlay_png_bytes": ([P, P, c.c_uint32, c.c_char_p, c.c_float, c.POINTER(P)], c.c_int32),
        "ibex_bytes_data": ([P, c.POINTER(c.POINTER(c.c_uint8)), c.POINTER(c.c_size_t)], c.c_int32),
        "ibex_bytes_free": ([P], None),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    if lib.ibex_abi_version() != ABI_VERSION:
        raise ImportError(f"libibex ABI {lib.ibex_abi_version()} does not match this binding's {ABI_VERSION}")
    return lib


_lib = _load()


def _check(status: int) -> None:
    if status != 0:
        msg = (_lib.ibex_last_error_message() or b"").decode("utf-8", "replace")
        raise (Cancelled if status == 7 else IbexError)(status, msg)


def version() -> str:
    """The library's version and commit, e.g. ``0.1.0+1a2b3c4d5e``."""
    return _lib.ibex_version_string().decode()


def _options(opts: dict) -> ctypes.c_void_p:
    h = ctypes.c_void_p()
    _check(_lib.ibex_options_from_json(_json.dumps(opts).encode(), ctypes.byref(h)))
    return h


class _Handle:
    """An owned C handle, freed by ``close()`` (also by ``with`` and, as a safety net, on
    garbage collection)."""

    _free = None

    def __init__(self, handle: ctypes.c_void_p):
        self._h = handle

    @property
    def handle(self) -> ctypes.c_void_p:
        if self._h is None or not self._h.value:
            raise IbexError(2, f"this {type(self).__name__} is closed")
        return self._h

    def close(self) -> None:
        # Swap the handle out before freeing it: two threads closing the same object cannot
        # both free it (the swap is one bytecode step under the GIL).
        h, self._h = getattr(self, "_h", None), None
        if h is not None and h.value:
            getattr(_lib, self._free)(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Model(_Handle):
    """A loaded model (immutable; share it between threads, each with its own Explainer).

    ``kind``: ``clip``, ``efficientnet_lite``, ``resnet``, ``convnext``, ``pipnet`` or None to
    detect; ``options``: e.g. ``device="cuda:0"``."""

    _free = "ibex_model_free"

    def __init__(self, path: Union[str, os.PathLike], kind: Optional[str] = None, **options):
        h, o = ctypes.c_void_p(), _options(options)
        try:
            _check(_lib.ibex_model_load(kind.encode() if kind else None, os.fspath(path).encode(), o,
                                        ctypes.byref(h)))
        finally:
            _lib.ibex_options_free(o)
        super().__init__(h)


class CancelToken(_Handle):
    """A cancel flag: ``cancel()`` from any thread stops a running explain (it raises Cancelled)."""

    _free = "ibex_cancel_token_free"

    def __init__(self):
        h = ctypes.c_void_p()
        _check(_lib.ibex_cancel_token_create(ctypes.byref(h)))
        super().__init__(h)

    def cancel(self) -> None:
        _check(_lib.ibex_cancel_token_cancel(self.handle))

    def reset(self) -> None:
        _check(_lib.ibex_cancel_token_reset(self.handle))


def _take_bytes(b: ctypes.c_void_p) -> bytes:
    try:
        data, n = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_size_t()
        _check(_lib.ibex_bytes_data(b, ctypes.byref(data), ctypes.byref(n)))
        return ctypes.string_at(data, n.value)
    finally:
        _lib.ibex_bytes_free(b)


class Image(_Handle):
    """An image file decoded by ibex (PNG, JPEG, WebP, BMP, TIFF, or frame 0 of a DICOM file
    with its own window; ``Image.dicom`` takes the frame and window)."""

    _free = "ibex_image_free"

    def __init__(self, path: Union[str, os.PathLike]):
        h = ctypes.c_void_p()
        _check(_lib.ibex_image_load_file(os.fspath(path).encode(), ctypes.byref(h)))
        super().__init__(h)

    @classmethod
    def dicom(cls, source: Union[str, os.PathLike, bytes], frame: int = 0,
              window: Optional[Tuple[float, float]] = None, window_index: int = 0, max_samples: int = 0) -> "Image":
        """One frame of a DICOM file (a path, or the file's bytes): ``window=(center, width)`` in
        rescaled units, or the file's window ``window_index`` (0: its first, or the frame's
        full range when it has none); ``max_samples`` caps rows × columns × frames × samples (0: the default)."""
        o = _DicomOptions(struct_size=ctypes.sizeof(_DicomOptions), frame=frame, window_index=window_index,
                          use_window=1 if window else 0, window_center=window[0] if window else 0.0,
                          window_width=window[1] if window else 0.0, max_samples=max_samples)
        h = ctypes.c_void_p()
        if isinstance(source, (bytes, bytearray)):
            buf = bytes(source)
            _check(_lib.ibex_image_load_dicom_memory(buf, len(buf), None, ctypes.byref(o), ctypes.byref(h)))
        else:
            _check(_lib.ibex_image_load_dicom(os.fspath(source).encode(), ctypes.byref(o), ctypes.byref(h)))
        img = cls.__new__(cls)
        _Handle.__init__(img, h)
        return img

    @property
    def pixels(self) -> np.ndarray:
        """A copy of the decoded pixels, H×W×3: uint8 for 8-bit sources, float32 in [0, 1]
        otherwise (DICOM frames after rescale and window)."""
        v, _ = self._view()
        dtype = np.dtype({0: np.uint8, 1: np.uint16, 2: np.float32}[v.pixel_type])
        ch = {0: 1, 1: 3, 2: 4}[v.layout]
        rows = np.frombuffer(ctypes.string_at(v.data, v.data_len), dtype=np.uint8)
        rows = np.pad(rows, (0, v.height * v.row_stride - rows.size)).reshape(v.height, v.row_stride)
        return rows[:, : v.width * ch * dtype.itemsize].copy().view(dtype).reshape(v.height, v.width, ch)

    @property
    def dicom_info(self) -> dict:
        """The DICOM geometry and identity (rows, columns, frames, pixel spacing, position,
        orientation, rescale, window applied, UIDs, modality) of an image read from DICOM."""
        info = _DicomInfo(struct_size=ctypes.sizeof(_DicomInfo))
        _check(_lib.ibex_image_dicom_info(self.handle, ctypes.byref(info)))
        out = {}
        for name, _ in _DicomInfo._fields_:
            if name == "struct_size" or name.startswith("has_"):
                continue
            v = getattr(info, name)
            if isinstance(v, bytes):
                v = v.decode()
            elif not isinstance(v, (int, float)):
                v = list(v)
            if getattr(info, "has_" + name, 1) == 0 or (name.startswith("window_") and not info.has_window):
                v = None
            out[name] = v
        return out

    def _view(self) -> Tuple[_View, object]:
        v = _View(struct_size=ctypes.sizeof(_View))
        _check(_lib.ibex_image_get_view(self.handle, ctypes.byref(v)))
        return v, self


_PIXEL = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 1, np.dtype(np.float32): 2}
_LAYOUT = {1: 0, 3: 1, 4: 2}


def _array_view(a: np.ndarray) -> Tuple[_View, object]:
    """A view of an H×W or H×W×C (C = 1, 3, 4) uint8 / uint16 / float32 array: no copy when
    each row is contiguous (any row stride), else one contiguous copy."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"an image must be a path, an ibex.Image or a numpy array, not {type(a).__name__}")
    if a.dtype not in _PIXEL:
        raise TypeError(f"image arrays must be uint8, uint16 or float32 (values in [0, 1]), not {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _LAYOUT:
        raise ValueError(f"an image array must be H×W or H×W×C with C in 1, 3, 4; got shape {a.shape}")
    h, w, ch = a.shape
    item = a.dtype.itemsize
    if a.strides[2] != item or a.strides[1] != ch * item or a.strides[0] < w * ch * item:
        a = np.ascontiguousarray(a)
    stride = a.strides[0]
    v = _View(struct_size=ctypes.sizeof(_View), width=w, height=h, row_stride=stride, pixel_type=_PIXEL[a.dtype],
              layout=_LAYOUT[ch], data=a.ctypes.data, data_len=(h - 1) * stride + w * ch * item)
    return v, a  # the array must outlive the call


def _image_view(image) -> Tuple[_View, object]:
    if isinstance(image, Image):
        return image._view()
    if isinstance(image, (str, os.PathLike)):
        img = Image(image)
        return img._view()
    return _array_view(image)


@dataclass
class Map:
    """One map of a result: ``data`` is a float32 array (height × width)."""
    name: str
    units: str
    width: int
    height: int
    text_index: int
    min_value: float
    max_value: float
    data: np.ndarray


class Result(_Handle):
    """An explanation: maps, per-caption tokens and similarity, metadata JSON, overlay."""

    _free = "ibex_result_free"

    @property
    def maps(self) -> List[Map]:
        n = ctypes.c_uint32()
        _check(_lib.ibex_result_map_count(self.handle, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            info = _MapInfo(struct_size=ctypes.sizeof(_MapInfo))
            _check(_lib.ibex_result_map_info(self.handle, i, ctypes.byref(info)))
            data = np.empty((info.height, info.width), dtype=np.float32)
            need = ctypes.c_size_t()
            _check(_lib.ibex_result_copy_map(self.handle, i, data.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                             data.size, ctypes.byref(need)))
            out.append(Map(info.name.decode(), info.units.decode(), info.width, info.height, info.text_index,
                           info.min_value, info.max_value, data))
        return out

    @property
    def json(self) -> dict:
        """Method, target, top-5 or texts with tokens, map names/units/sizes, settings, timing."""
        s = ctypes.c_char_p()
        _check(_lib.ibex_result_json(self.handle, ctypes.byref(s)))
        return _json.loads(s.value.decode())

    @property
    def text_count(self) -> int:
        n = ctypes.c_uint32()
        _check(_lib.ibex_result_text_count(self.handle, ctypes.byref(n)))
        return n.value

    def similarity(self, text_index: int = 0) -> float:
        v = ctypes.c_float()
        _check(_lib.ibex_result_similarity(self.handle, text_index, ctypes.byref(v)))
        return v.value

    def tokens(self, text_index: int = 0) -> List[Tuple[str, float]]:
        """The caption's tokens (start/end included) with their normalised scores."""
        n = ctypes.c_uint32()
        _check(_lib.ibex_result_token_count(self.handle, text_index, ctypes.byref(n)))
        out = []
        for t in range(n.value):
            s, v = ctypes.c_char_p(), ctypes.c_float()
            _check(_lib.ibex_result_token(self.handle, text_index, t, ctypes.byref(s), ctypes.byref(v)))
            out.append((s.value.decode("utf-8", "replace"), v.value))
        return out

    @property
    def source_region(self) -> Tuple[float, float, float, float]:
        """Where the image maps lie on the original image: ``(x0, y0, x1, y1)`` in pixels."""
        r = (ctypes.c_float * 4)()
        _check(_lib.ibex_result_source_region(self.handle, r))
        return tuple(r)

    def save_overlay(self, path: Union[str, os.PathLike], map_index: int = 0, colormap: str = "turbo",
                     opacity: float = 0.5) -> None:
        """Writes map ``map_index`` over the image as a PNG."""
        _check(_lib.ibex_render_overlay_png(self.handle, map_index, colormap.encode(), opacity,
                                            os.fspath(path).encode()))

    def overlay_png(self, map_index: int = 0, colormap: str = "turbo", opacity: float = 0.5,
                    original: Optional["Image"] = None) -> bytes:
        """Map ``map_index`` as PNG bytes: over ``original`` at its own size (the ``Image`` the
        result explains, e.g. a DICOM frame) when given, else over the preprocessed image."""
        b = ctypes.c_void_p()
        _check(_lib.ibex_render_overlay_png_bytes(self.handle, original.handle if original else None, map_index,
                                                  colormap.encode(), opacity, ctypes.byref(b)))
        return _take_bytes(b)

    def to_dicom(self, source: "Image", kind: str = "parametric_map", map_index: int = 0,
                 colormap: str = "turbo", opacity: float = 0.5) -> bytes:
        """A DICOM file derived from the DICOM ``source`` this result explains: ``kind``
        ``"parametric_map"`` (the float map at the source's size) or ``"secondary_capture"`` (the
        overlay), in the source's study, in a new series."""
        kinds = {"parametric_map": 0, "secondary_capture": 1}
        if kind not in kinds:
            raise ValueError(f"kind must be one of {sorted(kinds)}, not {kind!r}")
        b = ctypes.c_void_p()
        _check(_lib.ibex_result_to_dicom(self.handle, source.handle, map_index, kinds[kind], colormap.encode(), opacity,
                                         ctypes.byref(b)))
        return _take_bytes(b)


ProgressFn = Callable[[int, int], bool]


class Explainer(_Handle):
    """A method on a model (``gradcam``, ``iba``, ``m2ib``, ``pipnet``, …) with its options, e.g.
    ``Explainer(model, "iba", beta=10.0, steps=10)``. Use from one thread at a time."""

    _free = "ibex_explainer_free"

    def __init__(self, model: Model, method: str, **options):
        h, o = ctypes.c_void_p(), _options(options)
        try:
            _check(_lib.ibex_explainer_create(model.handle, method.encode(), o, ctypes.byref(h)))
        finally:
            _lib.ibex_options_free(o)
        super().__init__(h)
        self._model = model  # keeps the model's Python object alive with the explainer

    @staticmethod
    def _target(target: Optional[int], texts: Sequence[str]):
        enc = [t.encode() for t in texts]
        arr = (ctypes.c_char_p * len(enc))(*enc) if enc else None
        t = _Target(struct_size=ctypes.sizeof(_Target), class_index=-1 if target is None else int(target),
                    text=None, texts=arr, text_count=len(enc))
        return t, (enc, arr)

    @staticmethod
    def _control(progress: Optional[ProgressFn], cancel: Optional[CancelToken]):
        errors: list = []

        def trampoline(done, total, _user):
            try:
                return bool(progress(done, total))
            except BaseException as e:  # an exception in the callback cancels the call
                errors.append(e)
                return False

        cb = _PROGRESS(trampoline) if progress else _PROGRESS()
        c = _Control(struct_size=ctypes.sizeof(_Control), progress=cb, user=None,
                     cancel=cancel.handle.value if cancel else None)
        return c, (cb, errors)

    def explain(self, image, target: Optional[int] = None, texts: Union[str, Sequence[str]] = (),
                progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> Result:
        """Explains ``image`` (a path, an ``Image`` or an H×W[×C] uint8/uint16/float32 array) for
        class ``target`` (default: the predicted class) or the caption(s) ``texts`` (CLIP)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        view, keep = _image_view(image)
        t, tkeep = self._target(target, texts)
        c, (cb, errors) = self._control(progress, cancel)
        out = ctypes.c_void_p()
        status = _lib.ibex_explain(self.handle, ctypes.byref(view), ctypes.byref(t), ctypes.byref(c), ctypes.byref(out))
        if errors:
            raise errors[0]
        _check(status)
        return Result(out)

    def explain_batch(self, images: Sequence, target: Optional[int] = None, texts: Union[str, Sequence[str]] = (),
                      progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> List[Result]:
        """Explains several images for the same target in one call (progress over the batch)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        pairs = [_image_view(im) for im in images]
        views = (_View * len(pairs))(*[v for v, _ in pairs])
        t, tkeep = self._target(target, texts)
        c, (cb, errors) = self._control(progress, cancel)
        outs = (ctypes.c_void_p * len(pairs))()
        status = _lib.ibex_explain_batch(self.handle, views, len(pairs), ctypes.byref(t), ctypes.byref(c), outs)
        if errors:
            raise errors[0]
        _check(status)
        return [Result(ctypes.c_void_p(o)) for o in outs]


_log_keep = None


def set_log_callback(callback: Optional[Callable[[int, str], None]], max_level: int = 3) -> None:
    """Sends ibex's log messages (level 1 error … 4 debug) to ``callback(level, message)``;
    None switches logging off."""
    global _log_keep
    if callback is None:
        _check(_lib.ibex_set_log_callback(_LOG(), 0, None))
        _log_keep = None
        return
    cb = _LOG(lambda level, msg, _u: callback(level, msg.decode("utf-8", "replace")))
    _check(_lib.ibex_set_log_callback(cb, max_level, None))
    _log_keep = cb
