// go_echo: the Go competitor of the echo benchmark. The idiomatic Go server:
// one goroutine per connection doing Read/Write on a net.Conn (Go's netpoller
// parks the goroutine; TCP_NODELAY is Go's default). GOMAXPROCS is Go's
// default (the CPU count) unless set in the environment.
//
//	go_echo [-port N] [-host 127.0.0.1]
//
// Prints "listening on <port>" on stdout once ready.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16384)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 0, "TCP port (0 = pick one)")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_echo:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}
