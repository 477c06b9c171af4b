package ibex

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The repository root: IBEX_ROOT, else two levels up.
func root(t *testing.T) string {
	if r := os.Getenv("IBEX_ROOT"); r != "" {
		return r
	}
	r, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	once      sync.Once
	cnn, clip *Model
	modelsErr error
)

func models(t *testing.T) (*Model, *Model) {
	once.Do(func() {
		cnn, modelsErr = LoadModel(filepath.Join(root(t), "models/efficientnet-lite0"), "", nil)
		if modelsErr == nil {
			clip, modelsErr = LoadModel(filepath.Join(root(t), "models/fmnist-clip"), "clip", nil)
		}
	})
	if modelsErr != nil {
		t.Fatal(modelsErr)
	}
	return cnn, clip
}

func mustImage(t *testing.T, rel string) *Image {
	img, err := LoadImage(filepath.Join(root(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// firstMap(t)(ex.Explain(...)) is the first map of a result (which it closes).
func firstMap(t *testing.T) func(r *Result, err error) *Map {
	return func(r *Result, err error) *Map {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		m, err := r.Map(0)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]) {
			return false
		}
	}
	return true
}

func TestVersionAndABI(t *testing.T) {
	if err := CheckABI(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(Version(), "0.") {
		t.Fatal(Version())
	}
}

func TestGradCAMFileAndStridedBufferAgree(t *testing.T) {
	cnn, _ := models(t)
	ex, err := NewExplainer(cnn, "gradcam", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	img := mustImage(t, "examples/images/chelsea.png")
	defer img.Close()
	r, err := ex.Explain(img, Predicted(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := r.JSON()
	if !strings.Contains(js, `"top5"`) {
		t.Fatal(js)
	}
	m := firstMap(t)(r, nil)
	if m.Name != "gradcam" || len(m.Data) != int(m.Width*m.Height) || len(m.Data) == 0 {
		t.Fatalf("%+v", m.Name)
	}
	// The decoded pixels in a Go buffer whose rows are 13 bytes wider than the image.
	var v = viewOf(t, img)
	pad := uint32(13)
	wide := make([]byte, int(v.RowStride+pad)*int(v.Height))
	for y := uint32(0); y < v.Height; y++ {
		copy(wide[y*(v.RowStride+pad):], v.Data[y*v.RowStride:(y+1)*v.RowStride])
	}
	m2 := firstMap(t)(ex.ExplainPixels(Pixels{Data: wide, Width: v.Width, Height: v.Height, RowStride: v.RowStride + pad, Type: PixelU8, Layout: RGB}, Predicted(), nil, nil))
	if !sameBits(m.Data, m2.Data) {
		t.Fatal("a strided buffer gives another map")
	}
}

func TestM2IBProgressTokensOverlay(t *testing.T) {
	_, clip := models(t)
	o, _ := NewOptions()
	defer o.Close()
	if err := o.Set("steps", 3); err != nil {
		t.Fatal(err)
	}
	ex, err := NewExplainer(clip, "m2ib", o)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	img := mustImage(t, "examples/images/four_items.png")
	defer img.Close()
	var seen [][2]uint32
	r, err := ex.Explain(img, Captions("a sandal", "a bag"), func(d, n uint32) bool { seen = append(seen, [2]uint32{d, n}); return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(seen) == 0 || seen[len(seen)-1][0] != seen[len(seen)-1][1] {
		t.Fatal(seen)
	}
	if n, _ := r.TextCount(); n != 2 {
		t.Fatal(n)
	}
	toks, err := r.Tokens(0)
	found := false
	for _, tok := range toks {
		found = found || strings.Contains(tok.Text, "sandal")
	}
	if err != nil || !found {
		t.Fatal(toks, err)
	}
	if s, err := r.Similarity(1); err != nil || s < -1 || s > 1 {
		t.Fatal(s, err)
	}
	png, err := r.OverlayPNG(0, "viridis", 0.6, nil)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal(err)
	}
}

func TestCancelFromAnotherGoroutineAndFromTheCallback(t *testing.T) {
	_, clip := models(t)
	o, _ := NewOptions()
	defer o.Close()
	_ = o.Set("steps", 200)
	ex, err := NewExplainer(clip, "m2ib", o)
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	img := mustImage(t, "examples/images/four_items.png")
	defer img.Close()
	token, _ := NewCancelToken()
	defer token.Close()
	started := make(chan struct{})
	var once sync.Once
	go func() { <-started; _ = token.Cancel() }()
	_, err = ex.Explain(img, Captions("a sandal"), func(d, n uint32) bool { once.Do(func() { close(started) }); return true }, token)
	var ie *Error
	if !errors.Is(err, ErrCancelled) || !errors.As(err, &ie) || ie.Status != StatusCancelled {
		t.Fatalf("want cancelled, got %v", err)
	}
	_ = token.Reset()
	if _, err = ex.Explain(img, Captions("a sandal"), func(d, n uint32) bool { return d < 2 }, nil); !errors.Is(err, ErrCancelled) {
		t.Fatal(err)
	}
	// A panic in the callback stops the call and comes back as a panic in Go.
	func() {
		defer func() {
			if p := recover(); p != "from the callback" {
				t.Fatalf("recovered %v", p)
			}
		}()
		_, _ = ex.Explain(img, Captions("a sandal"), func(d, n uint32) bool { panic("from the callback") }, nil)
		t.Fatal("no panic")
	}()
}

func TestErrorsCarryTheLibrarysStatusAndMessage(t *testing.T) {
	cnn, _ := models(t)
	_, err := NewExplainer(cnn, "no-such-method", nil)
	var ie *Error
	if !errors.As(err, &ie) || ie.Status != StatusUnsupported || !strings.Contains(ie.Message, "no-such-method") {
		t.Fatal(err)
	}
	o, _ := OptionsFromJSON(`{"no_such_option": 1}`)
	defer o.Close()
	if _, err = NewExplainer(cnn, "iba", o); !errors.As(err, &ie) || !strings.Contains(ie.Message, "no_such_option") {
		t.Fatal(err)
	}
	if _, err = LoadModel("/no/such/model", "", nil); !errors.As(err, &ie) || (ie.Status != StatusNotFound && ie.Status != StatusIO) {
		t.Fatal(err)
	}
	if _, err = LoadImage("/no/such.png"); !errors.As(err, &ie) || ie.Status != StatusIO {
		t.Fatal(err)
	}
	ex, _ := NewExplainer(cnn, "gradcam", nil)
	if _, err = ex.ExplainPixels(Pixels{Data: make([]byte, 8*8*3), Width: 8, Height: 8, RowStride: 24, Type: PixelU8, Layout: RGB}, Predicted(), nil, nil); !errors.As(err, &ie) || ie.Status != StatusInvalidArgument {
		t.Fatal(err)
	}
	if _, err = ex.ExplainPixels(Pixels{Data: make([]byte, 100), Width: 64, Height: 64, RowStride: 192, Type: PixelU8, Layout: RGB}, Predicted(), nil, nil); !errors.As(err, &ie) || !strings.Contains(ie.Message, "100") {
		t.Fatal(err)
	}
	if _, err = ex.ExplainPixels(Pixels{Width: 64, Height: 64, RowStride: 192, Type: PixelU8, Layout: RGB}, Predicted(), nil, nil); !errors.As(err, &ie) || ie.Status != StatusNullPointer {
		t.Fatal(err)
	}
	img := mustImage(t, "examples/images/chelsea.png")
	defer img.Close()
	if _, err = ex.Explain(img, Class(5000), nil, nil); !errors.As(err, &ie) || ie.Status != StatusInvalidArgument {
		t.Fatal(err)
	}
	ex.Close()
	if _, err = ex.Explain(img, Predicted(), nil, nil); !errors.As(err, &ie) || ie.Status != StatusNullPointer || !strings.Contains(ie.Message, "closed") {
		t.Fatal(err)
	}
}

func TestBatchEqualsSingleCalls(t *testing.T) {
	cnn, _ := models(t)
	ex, _ := NewExplainer(cnn, "gradcam", nil)
	defer ex.Close()
	a := mustImage(t, "examples/images/chelsea.png")
	b := mustImage(t, "examples/images/four_items.png")
	defer a.Close()
	defer b.Close()
	batch, err := ex.ExplainBatch([]*Image{a, b}, Class(281), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range []*Image{a, b} {
		single := firstMap(t)(ex.Explain(img, Class(281), nil, nil))
		if !sameBits(firstMap(t)(batch[i], nil).Data, single.Data) {
			t.Fatalf("image %d", i)
		}
	}
}

func TestFourGoroutinesShareOneModel(t *testing.T) {
	cnn, _ := models(t)
	img := mustImage(t, "examples/images/chelsea.png")
	defer img.Close()
	ex, _ := NewExplainer(cnn, "gradcam", nil)
	want := firstMap(t)(ex.Explain(img, Predicted(), nil, nil)).Data
	ex.Close()
	var wg sync.WaitGroup
	got := make([][]float32, 4)
	errs := make([]error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			e, err := NewExplainer(cnn, "gradcam", nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer e.Close()
			r, err := e.Explain(img, Predicted(), nil, nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Close()
			m, err := r.Map(0)
			if err != nil {
				errs[i] = err
				return
			}
			got[i] = m.Data
		}(i)
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || !sameBits(got[i], want) {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
	}
}

func TestDICOMInParametricMapOut(t *testing.T) {
	cnn, _ := models(t)
	img, err := LoadDICOM(filepath.Join(root(t), "../shared/fixtures/images/dicom/CT_small.dcm"), DicomOptions{UseWindow: true, WindowCenter: 40, WindowWidth: 400})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	info, err := img.DicomInfo()
	if err != nil || info.Rows != 128 || info.Modality != "CT" || len(info.PixelSpacing) != 2 {
		t.Fatal(info, err)
	}
	ex, _ := NewExplainer(cnn, "gradcam", nil)
	defer ex.Close()
	r, err := ex.Explain(img, Predicted(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pm, err := r.ToDICOM(img, ParametricMap, 0, "", 0.5)
	if err != nil || len(pm) < 128*128*4 || string(pm[128:132]) != "DICM" {
		t.Fatal(err)
	}
}

func TestLogCallback(t *testing.T) {
	var mu sync.Mutex
	var messages []string
	if err := SetLogCallback(func(level int, m string) { mu.Lock(); messages = append(messages, m); mu.Unlock() }, LogDebug); err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(filepath.Join(root(t), "models/fmnist-clip"), "clip", nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	_ = SetLogCallback(nil, LogDebug)
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, s := range messages {
		found = found || strings.Contains(s, "loaded CLIP")
	}
	if !found {
		t.Fatal(messages)
	}
}

// viewOf copies an image's decoded pixels into Go memory.
func viewOf(t *testing.T, img *Image) Pixels {
	v, err := img.Pixels()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
