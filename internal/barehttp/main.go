// Command barehttp is the calibration baseline of the benchmarks: a bare
// fasthttp server whose handler answers 204, configured like fleetd's.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	s := &fasthttp.Server{
		Handler:               func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) },
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		MaxRequestBodySize:    1 << 20,
	}
	log.Fatal(s.ListenAndServe(*addr))
}
