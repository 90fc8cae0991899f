package faultproxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pgadvisory/pgadvisory/internal/faultproxy"
)

// A partition and its healing, between a client and an echo server.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c) // echo
	}()

	p, err := faultproxy.New(ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	fmt.Fprintln(c, "hello")
	line, _ := r.ReadString('\n')
	fmt.Print("forward: ", line)

	p.Blackhole()
	fmt.Fprintln(c, "anyone there?") // the write succeeds: nothing tells the client
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = r.ReadString('\n')
	fmt.Println("blackhole: timed out:", err.(net.Error).Timeout())

	p.Forward() // healed: what was held back is delivered
	_ = c.SetReadDeadline(time.Time{})
	line, _ = r.ReadString('\n')
	fmt.Print("healed: ", line)
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// forward: hello
	// blackhole: timed out: true
	// healed: anyone there?
	// {Accepted:1 Refused:0 Cut:0 Failed:0 Active:1}
}
