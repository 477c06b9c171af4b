// Package ibex is a cgo binding over the ibex C ABI (include/ibex.h): information-bottleneck
// explanations of vision and vision-language models.
//
// Handles free themselves with Close (a finalizer is a safety net, not a substitute); errors
// are *Error values carrying the library's status and message, and errors.Is(err,
// ErrCancelled) tells a cancelled call. Callbacks reach Go through cgo.Handle. Build with the
// library on the linker path, e.g. CGO_LDFLAGS="-L/path/to/lib -Wl,-rpath,/path/to/lib".
package ibex

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -libex
#include <stdlib.h>
#include <string.h>
#include "ibex.h"

extern bool goProgress(uint32_t, uint32_t, void *);
extern void goLog(int32_t, char *, void *);

// Explains views (in C memory, or pointing to C memory) with the target and run control
// assembled here, so that no Go pointer is stored in C memory.
static int32_t ibexgo_explain_batch(ibex_explainer *e, const ibex_image_view *views, uint32_t n, int32_t class_index,
                                    const char *const *texts, uint32_t text_count, int with_progress, uintptr_t user,
                                    const ibex_cancel_token *cancel, ibex_result **out) {
	ibex_target t;
	memset(&t, 0, sizeof t);
	t.struct_size = sizeof t;
	t.class_index = class_index;
	t.texts = texts;
	t.text_count = text_count;
	ibex_run_control c;
	memset(&c, 0, sizeof c);
	c.struct_size = sizeof c;
	c.progress = with_progress ? (ibex_progress_fn)goProgress : NULL;
	c.user = (void *)user;
	c.cancel = cancel;
	return ibex_explain_batch(e, views, n, &t, &c, out);
}

// One caller buffer (Go memory, passed as an argument for the call only).
static int32_t ibexgo_explain_pixels(ibex_explainer *e, const void *data, size_t len, uint32_t w, uint32_t h,
                                     uint32_t stride, int32_t pixel_type, int32_t layout, int32_t class_index,
                                     const char *const *texts, uint32_t text_count, int with_progress, uintptr_t user,
                                     const ibex_cancel_token *cancel, ibex_result **out) {
	ibex_image_view v;
	memset(&v, 0, sizeof v);
	v.struct_size = sizeof v;
	v.width = w;
	v.height = h;
	v.row_stride = stride;
	v.pixel_type = pixel_type;
	v.layout = layout;
	v.data = data;
	v.data_len = len;
	return ibexgo_explain_batch(e, &v, 1, class_index, texts, text_count, with_progress, user, cancel, out);
}

static int32_t ibexgo_set_log(int on, int32_t max_level) {
	return ibex_set_log_callback(on ? (ibex_log_fn)goLog : NULL, max_level, NULL);
}

static int32_t ibexgo_view(const ibex_image *img, ibex_image_view *v) {
	memset(v, 0, sizeof *v);
	v->struct_size = sizeof *v;
	return ibex_image_get_view(img, v);
}

static ibex_dicom_options ibexgo_dicom_options(uint32_t frame, int32_t window_index, int32_t use_window, double c,
                                               double w, uint64_t max_samples) {
	ibex_dicom_options o;
	memset(&o, 0, sizeof o);
	o.struct_size = sizeof o;
	o.frame = frame;
	o.window_index = window_index;
	o.use_window = use_window;
	o.window_center = c;
	o.window_width = w;
	o.max_samples = max_samples;
	return o;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// ABIVersion is the C ABI version this package was written for.
const ABIVersion = 1

// Status codes of the C ABI.
const (
	StatusOK              = 0
	StatusInvalidArgument = 1
	StatusNullPointer     = 2
	StatusIO              = 3
	StatusFormat          = 4
	StatusNotFound        = 5
	StatusUnsupported     = 6
	StatusCancelled       = 7
	StatusNumerical       = 8
	StatusBackend         = 9
	StatusBufferTooSmall  = 10
	StatusOutOfRange      = 11
	StatusPanic           = 12
)

// ErrCancelled matches (errors.Is) an error from a cancelled call.
var ErrCancelled = errors.New("ibex: cancelled")

// Error is a failed call: the status (Status*) and the library's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ibex: %s: %s", StatusName(e.Status), e.Message)
}

// Is makes errors.Is(err, ErrCancelled) true for cancelled calls.
func (e *Error) Is(target error) bool { return target == ErrCancelled && e.Status == StatusCancelled }

// StatusName is the library's description of a status, e.g. "invalid argument".
func StatusName(status int) string { return C.GoString(C.ibex_status_string(C.int32_t(status))) }

func check(status C.int32_t) error {
	if status == 0 {
		return nil
	}
	return &Error{Status: int(status), Message: C.GoString(C.ibex_last_error_message())}
}

// checked runs one C call and reads its error message on the same OS thread (the library's
// last-error message is per thread, and a goroutine may move between threads between cgo
// calls).
func checked(call func() C.int32_t) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return check(call())
}

var errClosed = &Error{Status: StatusNullPointer, Message: "the handle is closed"}

// Version is the library's version string.
func Version() string { return C.GoString(C.ibex_version_string()) }

// CheckABI fails unless the linked library has the ABI this package expects.
func CheckABI() error {
	if v := int(C.ibex_abi_version()); v != ABIVersion {
		return &Error{Status: StatusUnsupported, Message: fmt.Sprintf("libibex has ABI %d, this package expects %d", v, ABIVersion)}
	}
	return nil
}

func cstr(s string) *C.char { return C.CString(s) }

// Options are settings for a model or a method.
type Options struct{ p *C.ibex_options }

// NewOptions makes empty options.
func NewOptions() (*Options, error) {
	var p *C.ibex_options
	if err := checked(func() C.int32_t { return C.ibex_options_create(&p) }); err != nil {
		return nil, err
	}
	o := &Options{p}
	runtime.SetFinalizer(o, (*Options).Close)
	return o, nil
}

// OptionsFromJSON parses options from a JSON object.
func OptionsFromJSON(json string) (*Options, error) {
	s := cstr(json)
	defer C.free(unsafe.Pointer(s))
	var p *C.ibex_options
	if err := checked(func() C.int32_t { return C.ibex_options_from_json(s, &p) }); err != nil {
		return nil, err
	}
	o := &Options{p}
	runtime.SetFinalizer(o, (*Options).Close)
	return o, nil
}

// Set sets key to a float64, an int, an int64 or a string.
func (o *Options) Set(key string, value interface{}) error {
	if o == nil || o.p == nil {
		return errClosed
	}
	k := cstr(key)
	defer C.free(unsafe.Pointer(k))
	defer runtime.KeepAlive(o)
	switch v := value.(type) {
	case float64:
		return checked(func() C.int32_t { return C.ibex_options_set_float(o.p, k, C.double(v)) })
	case int:
		return checked(func() C.int32_t { return C.ibex_options_set_int(o.p, k, C.int64_t(v)) })
	case int64:
		return checked(func() C.int32_t { return C.ibex_options_set_int(o.p, k, C.int64_t(v)) })
	case string:
		s := cstr(v)
		defer C.free(unsafe.Pointer(s))
		return checked(func() C.int32_t { return C.ibex_options_set_str(o.p, k, s) })
	default:
		return &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("option %q: unsupported value type %T", key, value)}
	}
}

// Close frees the options.
func (o *Options) Close() {
	if o != nil && o.p != nil {
		C.ibex_options_free(o.p)
		o.p = nil
	}
}

func (o *Options) raw() *C.ibex_options {
	if o == nil {
		return nil
	}
	return o.p
}

// Model is a loaded model: immutable, shared by any number of explainers and goroutines.
type Model struct{ p *C.ibex_model }

// LoadModel loads a model directory; kind "" detects it.
func LoadModel(path, kind string, opts *Options) (*Model, error) {
	cp := cstr(path)
	defer C.free(unsafe.Pointer(cp))
	var ck *C.char
	if kind != "" {
		ck = cstr(kind)
		defer C.free(unsafe.Pointer(ck))
	}
	var p *C.ibex_model
	err := checked(func() C.int32_t { return C.ibex_model_load(ck, cp, opts.raw(), &p) })
	runtime.KeepAlive(opts)
	if err != nil {
		return nil, err
	}
	m := &Model{p}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// DescribeJSON is {"kind": ..., "methods": [...]}.
func (m *Model) DescribeJSON() (string, error) {
	if m == nil || m.p == nil {
		return "", errClosed
	}
	var b *C.ibex_bytes
	if err := checked(func() C.int32_t { return C.ibex_model_describe_json(m.p, &b) }); err != nil {
		return "", err
	}
	runtime.KeepAlive(m)
	out, err := takeBytes(b)
	return string(out), err
}

// Close frees the model (explainers made from it stay valid).
func (m *Model) Close() {
	if m != nil && m.p != nil {
		C.ibex_model_free(m.p)
		m.p = nil
	}
}

func takeBytes(b *C.ibex_bytes) ([]byte, error) {
	defer C.ibex_bytes_free(b)
	var data *C.uint8_t
	var n C.size_t
	if err := checked(func() C.int32_t { return C.ibex_bytes_data(b, &data, &n) }); err != nil {
		return nil, err
	}
	return copyOut(unsafe.Pointer(data), int(n)), nil
}

// copyOut copies n bytes of C memory into Go memory (without C.GoBytes's 2 GiB limit).
func copyOut(p unsafe.Pointer, n int) []byte {
	out := make([]byte, n)
	if n > 0 {
		copy(out, unsafe.Slice((*byte)(p), n))
	}
	return out
}

// PixelType is the sample type of a raw buffer.
type PixelType int32

// Layout is the channel layout of a raw buffer.
type Layout int32

const (
	PixelU8  PixelType = 0
	PixelU16 PixelType = 1
	PixelF32 PixelType = 2
	Gray     Layout    = 0
	RGB      Layout    = 1
	RGBA     Layout    = 2
)

// Pixels is a caller buffer: row y starts at byte y*RowStride of Data; samples in native
// byte order. It is passed to the library without a copy, for the call only.
type Pixels struct {
	Data                     []byte
	Width, Height, RowStride uint32
	Type                     PixelType
	Layout                   Layout
}

// Image is an image decoded by ibex (PNG, JPEG, WebP, BMP, TIFF, DICOM).
type Image struct{ p *C.ibex_image }

// LoadImage decodes an image file (DICOM too: frame 0, the file's window).
func LoadImage(path string) (*Image, error) {
	cp := cstr(path)
	defer C.free(unsafe.Pointer(cp))
	var p *C.ibex_image
	if err := checked(func() C.int32_t { return C.ibex_image_load_file(cp, &p) }); err != nil {
		return nil, err
	}
	img := &Image{p}
	runtime.SetFinalizer(img, (*Image).Close)
	return img, nil
}

// DicomOptions choose the frame and window of a DICOM image.
type DicomOptions struct {
	Frame                     uint32
	WindowIndex               int32 // the file's window (0: its first, or the full range when it has none)
	UseWindow                 bool
	WindowCenter, WindowWidth float64
	MaxSamples                uint64 // 0: the library's default
}

// LoadDICOM reads one frame of a DICOM file.
func LoadDICOM(path string, o DicomOptions) (*Image, error) {
	cp := cstr(path)
	defer C.free(unsafe.Pointer(cp))
	use := C.int32_t(0)
	if o.UseWindow {
		use = 1
	}
	co := C.ibexgo_dicom_options(C.uint32_t(o.Frame), C.int32_t(o.WindowIndex), use, C.double(o.WindowCenter),
		C.double(o.WindowWidth), C.uint64_t(o.MaxSamples))
	var p *C.ibex_image
	if err := checked(func() C.int32_t { return C.ibex_image_load_dicom(cp, &co, &p) }); err != nil {
		return nil, err
	}
	img := &Image{p}
	runtime.SetFinalizer(img, (*Image).Close)
	return img, nil
}

// DicomInfo is the DICOM geometry and identity of an image read from DICOM.
type DicomInfo struct {
	Rows, Columns, Frames, Frame uint32
	Modality, StudyInstanceUID   string
	SeriesInstanceUID            string
	SOPInstanceUID               string
	FrameOfReferenceUID          string
	PixelSpacing                 []float64 // nil when unknown
	WindowCenter, WindowWidth    float64
}

// DicomInfo describes an image read from DICOM.
func (img *Image) DicomInfo() (*DicomInfo, error) {
	if img == nil || img.p == nil {
		return nil, errClosed
	}
	var info C.ibex_dicom_info
	info.struct_size = C.uint32_t(unsafe.Sizeof(info))
	if err := checked(func() C.int32_t { return C.ibex_image_dicom_info(img.p, &info) }); err != nil {
		return nil, err
	}
	runtime.KeepAlive(img)
	d := &DicomInfo{
		Rows: uint32(info.rows), Columns: uint32(info.columns), Frames: uint32(info.frames), Frame: uint32(info.frame),
		Modality:            C.GoString(&info.modality[0]),
		StudyInstanceUID:    C.GoString(&info.study_instance_uid[0]),
		SeriesInstanceUID:   C.GoString(&info.series_instance_uid[0]),
		SOPInstanceUID:      C.GoString(&info.sop_instance_uid[0]),
		FrameOfReferenceUID: C.GoString(&info.frame_of_reference_uid[0]),
		WindowCenter:        float64(info.window_center), WindowWidth: float64(info.window_width),
	}
	if info.has_pixel_spacing != 0 {
		d.PixelSpacing = []float64{float64(info.pixel_spacing[0]), float64(info.pixel_spacing[1])}
	}
	return d, nil
}

// Pixels copies the decoded pixels (RGB: u8 for 8-bit sources, f32 in [0, 1] otherwise).
func (img *Image) Pixels() (Pixels, error) {
	if img == nil || img.p == nil {
		return Pixels{}, errClosed
	}
	defer runtime.KeepAlive(img)
	var v C.ibex_image_view
	if err := checked(func() C.int32_t { return C.ibexgo_view(img.p, &v) }); err != nil {
		return Pixels{}, err
	}
	return Pixels{
		Data:  copyOut(unsafe.Pointer(v.data), int(v.data_len)),
		Width: uint32(v.width), Height: uint32(v.height), RowStride: uint32(v.row_stride),
		Type: PixelType(v.pixel_type), Layout: Layout(v.layout),
	}, nil
}

// Close frees the image.
func (img *Image) Close() {
	if img != nil && img.p != nil {
		C.ibex_image_free(img.p)
		img.p = nil
	}
}

// CancelToken cancels a running call from any goroutine.
type CancelToken struct{ p *C.ibex_cancel_token }

// NewCancelToken makes a token.
func NewCancelToken() (*CancelToken, error) {
	var p *C.ibex_cancel_token
	if err := checked(func() C.int32_t { return C.ibex_cancel_token_create(&p) }); err != nil {
		return nil, err
	}
	t := &CancelToken{p}
	runtime.SetFinalizer(t, (*CancelToken).Close)
	return t, nil
}

// Cancel makes the calls watching the token stop at their next step.
func (t *CancelToken) Cancel() error {
	if t == nil || t.p == nil {
		return errClosed
	}
	defer runtime.KeepAlive(t)
	return checked(func() C.int32_t { return C.ibex_cancel_token_cancel(t.p) })
}

// Reset makes the token usable again.
func (t *CancelToken) Reset() error {
	if t == nil || t.p == nil {
		return errClosed
	}
	defer runtime.KeepAlive(t)
	return checked(func() C.int32_t { return C.ibex_cancel_token_reset(t.p) })
}

// Close frees the token.
func (t *CancelToken) Close() {
	if t != nil && t.p != nil {
		C.ibex_cancel_token_free(t.p)
		t.p = nil
	}
}

// Target is what to explain: a class and/or captions. The zero Target explains the model's
// predicted class.
type Target struct {
	// Class is the class to explain; nil means the predicted class.
	Class *int32
	// Texts are captions (vision-language models).
	Texts []string
}

// Predicted is the target of the model's predicted class (the zero Target).
func Predicted() Target { return Target{} }

// Class is the target of class c.
func Class(c int32) Target { return Target{Class: &c} }

// Captions is the target of captions (vision-language models).
func Captions(texts ...string) Target { return Target{Texts: texts} }

func (t Target) classIndex() C.int32_t {
	if t.Class == nil {
		return -1
	}
	return C.int32_t(*t.Class)
}

// Progress receives steps done and the total; returning false cancels the call.
type Progress func(done, total uint32) bool

type progressState struct {
	fn       Progress
	panicked interface{}
}

// Explainer is a method for a model, with its options; one per goroutine.
type Explainer struct{ p *C.ibex_explainer }

// NewExplainer makes an explainer of `method` for `m`.
func NewExplainer(m *Model, method string, opts *Options) (*Explainer, error) {
	if m == nil || m.p == nil {
		return nil, errClosed
	}
	cm := cstr(method)
	defer C.free(unsafe.Pointer(cm))
	var p *C.ibex_explainer
	err := checked(func() C.int32_t { return C.ibex_explainer_create(m.p, cm, opts.raw(), &p) })
	runtime.KeepAlive(m)
	runtime.KeepAlive(opts)
	if err != nil {
		return nil, err
	}
	e := &Explainer{p}
	runtime.SetFinalizer(e, (*Explainer).Close)
	return e, nil
}

// Close frees the explainer.
func (e *Explainer) Close() {
	if e != nil && e.p != nil {
		C.ibex_explainer_free(e.p)
		e.p = nil
	}
}

// call runs one explain call with the target's captions in C memory and the progress
// callback behind a cgo.Handle; `do` makes the C call.
func (e *Explainer) call(t Target, progress Progress, cancel *CancelToken, n int,
	do func(texts **C.char, ntexts C.uint32_t, withProgress C.int, user C.uintptr_t, cancel *C.ibex_cancel_token, out **C.ibex_result) C.int32_t) ([]*Result, error) {
	if e == nil || e.p == nil {
		return nil, errClosed
	}
	var texts **C.char
	if len(t.Texts) > 0 {
		arr := (*[1 << 20]*C.char)(C.malloc(C.size_t(len(t.Texts)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:len(t.Texts):len(t.Texts)]
		for i, s := range t.Texts {
			arr[i] = cstr(s)
		}
		defer func() {
			for _, p := range arr {
				C.free(unsafe.Pointer(p))
			}
			C.free(unsafe.Pointer(&arr[0]))
		}()
		texts = &arr[0]
	}
	st := &progressState{fn: progress}
	h := cgo.NewHandle(st)
	defer h.Delete()
	with := C.int(0)
	if progress != nil {
		with = 1
	}
	var ct *C.ibex_cancel_token
	if cancel != nil {
		if cancel.p == nil {
			return nil, errClosed
		}
		ct = cancel.p
	}
	out := (*[1 << 20]*C.ibex_result)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof((*C.ibex_result)(nil)))))[:n:n]
	defer C.free(unsafe.Pointer(&out[0]))
	runtime.LockOSThread() // the error message is read on the thread that made the call
	status := do(texts, C.uint32_t(len(t.Texts)), with, C.uintptr_t(h), ct, &out[0])
	err := check(status)
	runtime.UnlockOSThread()
	runtime.KeepAlive(e)
	runtime.KeepAlive(cancel)
	if st.panicked != nil {
		panic(st.panicked)
	}
	if err != nil {
		return nil, err
	}
	results := make([]*Result, n)
	for i := range results {
		results[i] = newResult(out[i])
	}
	return results, nil
}

// Explain explains one decoded image. progress and cancel may be nil.
func (e *Explainer) Explain(img *Image, t Target, progress Progress, cancel *CancelToken) (*Result, error) {
	r, err := e.ExplainBatch([]*Image{img}, t, progress, cancel)
	if err != nil {
		return nil, err
	}
	return r[0], nil
}

// ExplainBatch explains several decoded images for the same target in one call.
func (e *Explainer) ExplainBatch(images []*Image, t Target, progress Progress, cancel *CancelToken) ([]*Result, error) {
	if len(images) == 0 {
		return nil, &Error{Status: StatusInvalidArgument, Message: "no images"}
	}
	views := (*[1 << 20]C.ibex_image_view)(C.calloc(C.size_t(len(images)), C.size_t(unsafe.Sizeof(C.ibex_image_view{}))))[:len(images):len(images)]
	defer C.free(unsafe.Pointer(&views[0]))
	for i, img := range images {
		if img == nil || img.p == nil {
			return nil, errClosed
		}
		if err := checked(func() C.int32_t { return C.ibexgo_view(img.p, &views[i]) }); err != nil {
			return nil, err
		}
	}
	defer runtime.KeepAlive(images)
	return e.call(t, progress, cancel, len(images), func(texts **C.char, nt C.uint32_t, with C.int, user C.uintptr_t, ct *C.ibex_cancel_token, out **C.ibex_result) C.int32_t {
		return C.ibexgo_explain_batch(e.p, &views[0], C.uint32_t(len(images)), t.classIndex(), texts, nt, with, user, ct, out)
	})
}

// ExplainPixels explains a caller buffer, read in place for the call's duration.
func (e *Explainer) ExplainPixels(px Pixels, t Target, progress Progress, cancel *CancelToken) (*Result, error) {
	var data unsafe.Pointer
	if len(px.Data) > 0 {
		data = unsafe.Pointer(&px.Data[0])
	}
	r, err := e.call(t, progress, cancel, 1, func(texts **C.char, nt C.uint32_t, with C.int, user C.uintptr_t, ct *C.ibex_cancel_token, out **C.ibex_result) C.int32_t {
		return C.ibexgo_explain_pixels(e.p, data, C.size_t(len(px.Data)), C.uint32_t(px.Width), C.uint32_t(px.Height),
			C.uint32_t(px.RowStride), C.int32_t(px.Type), C.int32_t(px.Layout), t.classIndex(), texts, nt, with, user, ct, out)
	})
	runtime.KeepAlive(px.Data) // C read Go memory until here
	if err != nil {
		return nil, err
	}
	return r[0], nil
}

// Map is one map of a result: name, units, size and a copy of its values (row-major).
type Map struct {
	Name, Units   string
	Width, Height uint32
	TextIndex     int32
	Min, Max      float32
	Data          []float32
}

// Token is a caption token and its normalised score.
type Token struct {
	Text  string
	Score float32
}

// Result is an explanation; immutable and readable from any goroutine.
type Result struct{ p *C.ibex_result }

func newResult(p *C.ibex_result) *Result {
	r := &Result{p}
	runtime.SetFinalizer(r, (*Result).Close)
	return r
}

// Close frees the result.
func (r *Result) Close() {
	if r != nil && r.p != nil {
		C.ibex_result_free(r.p)
		r.p = nil
	}
}

// MapCount is the number of maps.
func (r *Result) MapCount() (int, error) {
	if r == nil || r.p == nil {
		return 0, errClosed
	}
	var n C.uint32_t
	defer runtime.KeepAlive(r)
	err := checked(func() C.int32_t { return C.ibex_result_map_count(r.p, &n) })
	return int(n), err
}

// Map copies map i.
func (r *Result) Map(i int) (*Map, error) {
	if r == nil || r.p == nil {
		return nil, errClosed
	}
	defer runtime.KeepAlive(r)
	var info C.ibex_map_info
	info.struct_size = C.uint32_t(unsafe.Sizeof(info))
	if err := checked(func() C.int32_t { return C.ibex_result_map_info(r.p, C.uint32_t(i), &info) }); err != nil {
		return nil, err
	}
	var data *C.float
	var n C.size_t
	if err := checked(func() C.int32_t { return C.ibex_result_map_data(r.p, C.uint32_t(i), &data, &n) }); err != nil {
		return nil, err
	}
	values := make([]float32, int(n))
	if n > 0 {
		copy(values, (*[1 << 30]float32)(unsafe.Pointer(data))[:int(n):int(n)])
	}
	return &Map{
		Name: C.GoString(info.name), Units: C.GoString(info.units), Width: uint32(info.width), Height: uint32(info.height),
		TextIndex: int32(info.text_index), Min: float32(info.min_value), Max: float32(info.max_value), Data: values,
	}, nil
}

// TextCount is the number of captions explained.
func (r *Result) TextCount() (int, error) {
	if r == nil || r.p == nil {
		return 0, errClosed
	}
	var n C.uint32_t
	defer runtime.KeepAlive(r)
	err := checked(func() C.int32_t { return C.ibex_result_text_count(r.p, &n) })
	return int(n), err
}

// Similarity is the image–caption cosine similarity of caption i.
func (r *Result) Similarity(i int) (float32, error) {
	if r == nil || r.p == nil {
		return 0, errClosed
	}
	var s C.float
	defer runtime.KeepAlive(r)
	err := checked(func() C.int32_t { return C.ibex_result_similarity(r.p, C.uint32_t(i), &s) })
	return float32(s), err
}

// Tokens are caption i's tokens and scores.
func (r *Result) Tokens(i int) ([]Token, error) {
	if r == nil || r.p == nil {
		return nil, errClosed
	}
	defer runtime.KeepAlive(r)
	var n C.uint32_t
	if err := checked(func() C.int32_t { return C.ibex_result_token_count(r.p, C.uint32_t(i), &n) }); err != nil {
		return nil, err
	}
	out := make([]Token, int(n))
	for k := range out {
		var s *C.char
		var score C.float
		if err := checked(func() C.int32_t { return C.ibex_result_token(r.p, C.uint32_t(i), C.uint32_t(k), &s, &score) }); err != nil {
			return nil, err
		}
		out[k] = Token{C.GoString(s), float32(score)}
	}
	return out, nil
}

// JSON is the report: method, target, top-5, texts, maps, settings, timing.
func (r *Result) JSON() (string, error) {
	if r == nil || r.p == nil {
		return "", errClosed
	}
	var s *C.char
	defer runtime.KeepAlive(r)
	if err := checked(func() C.int32_t { return C.ibex_result_json(r.p, &s) }); err != nil {
		return "", err
	}
	return C.GoString(s), nil
}

// SourceRegion is x0, y0, x1, y1 of the maps on the original image.
func (r *Result) SourceRegion() ([4]float32, error) {
	var out [4]float32
	if r == nil || r.p == nil {
		return out, errClosed
	}
	var c [4]C.float
	defer runtime.KeepAlive(r)
	if err := checked(func() C.int32_t { return C.ibex_result_source_region(r.p, &c[0]) }); err != nil {
		return out, err
	}
	for i := range c {
		out[i] = float32(c[i])
	}
	return out, nil
}

// OverlayPNG renders map i as PNG bytes: over `original` at its size when non-nil, else over
// the preprocessed image. colormap "" is turbo.
func (r *Result) OverlayPNG(i int, colormap string, opacity float32, original *Image) ([]byte, error) {
	if r == nil || r.p == nil {
		return nil, errClosed
	}
	var cm *C.char
	if colormap != "" {
		cm = cstr(colormap)
		defer C.free(unsafe.Pointer(cm))
	}
	var orig *C.ibex_image
	if original != nil {
		orig = original.p
	}
	var b *C.ibex_bytes
	err := checked(func() C.int32_t {
		return C.ibex_render_overlay_png_bytes(r.p, orig, C.uint32_t(i), cm, C.float(opacity), &b)
	})
	runtime.KeepAlive(r)
	runtime.KeepAlive(original)
	if err != nil {
		return nil, err
	}
	return takeBytes(b)
}

// DicomKind chooses the derived DICOM object.
type DicomKind int32

const (
	ParametricMap    DicomKind = 0
	SecondaryCapture DicomKind = 1
)

// ToDICOM derives a Parametric Map or a Secondary Capture from the DICOM image explained.
func (r *Result) ToDICOM(source *Image, kind DicomKind, i int, colormap string, opacity float32) ([]byte, error) {
	if r == nil || r.p == nil || source == nil || source.p == nil {
		return nil, errClosed
	}
	var cm *C.char
	if colormap != "" {
		cm = cstr(colormap)
		defer C.free(unsafe.Pointer(cm))
	}
	var b *C.ibex_bytes
	err := checked(func() C.int32_t {
		return C.ibex_result_to_dicom(r.p, source.p, C.uint32_t(i), C.int32_t(kind), cm, C.float(opacity), &b)
	})
	runtime.KeepAlive(r)
	runtime.KeepAlive(source)
	if err != nil {
		return nil, err
	}
	return takeBytes(b)
}

// Log levels.
const (
	LogError = 1
	LogWarn  = 2
	LogInfo  = 3
	LogDebug = 4
)

var (
	logMu sync.RWMutex
	logFn func(level int, message string)
)

// SetLogCallback sends the library's messages up to maxLevel to f (from any goroutine or
// thread running ibex code); nil switches logging off. Process-wide.
func SetLogCallback(f func(level int, message string), maxLevel int) error {
	logMu.Lock()
	logFn = f
	logMu.Unlock()
	on := C.int(0)
	if f != nil {
		on = 1
	}
	return checked(func() C.int32_t { return C.ibexgo_set_log(on, C.int32_t(maxLevel)) })
}
