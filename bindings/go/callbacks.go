package ibex

/*
#include <stdint.h>
#include <stdbool.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// goProgress is the C ABI's progress callback: `user` is a cgo.Handle of a *progressState.
//
//export goProgress
func goProgress(done, total C.uint32_t, user unsafe.Pointer) (keepGoing C.bool) {
	st := cgo.Handle(uintptr(user)).Value().(*progressState)
	defer func() {
		if p := recover(); p != nil {
			// A panic must not unwind through C: stop the call, re-panic after it returns.
			st.panicked = p
			keepGoing = false
		}
	}()
	return C.bool(st.fn(uint32(done), uint32(total)))
}

// goLog is the C ABI's log callback.
//
//export goLog
func goLog(level C.int32_t, message *C.char, user unsafe.Pointer) {
	defer func() { _ = recover() }() // a logger must not unwind through C
	logMu.RLock()
	f := logFn
	logMu.RUnlock()
	if f != nil {
		f(int(level), C.GoString(message))
	}
}
