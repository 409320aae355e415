// go_http: the Go competitor of the HTTP benchmark: net/http answering
// GET / with "Hello, World!" (text/plain; net/http adds Date and
// Content-Length and keeps connections alive). GOMAXPROCS is Go's default
// (the CPU count) unless set in the environment.
//
//	go_http [-port N] [-host 127.0.0.1]
//
// Prints "listening on <port>" on stdout once ready.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
)

var hello = []byte("Hello, World!")

func main() {
	port := flag.Int("port", 0, "TCP port (0 = pick one)")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_http:", err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(hello)
	})
	fmt.Printf("listening on %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "go_http:", err)
		os.Exit(1)
	}
}
