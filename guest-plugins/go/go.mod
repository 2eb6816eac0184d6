module sandport.example/goplugins

// go:wasmexport (exporting functions from a GOOS=wasip1 build) needs Go 1.24 or later.
go 1.24
