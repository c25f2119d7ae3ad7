// Package redistest starts real redis-server processes for tests. A missing
// binary is a test failure that says how to install it, never a skip.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	Addr   string
	URL    string
	Dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	args   []string
}

// FreePort returns a free loopback TCP port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Binary returns the path of redis-server or fails the test.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("redistest: %s not found in PATH: install it (apt-get install redis-server) or run `make test`, which installs it", name)
	}
	return p
}

// Start starts a redis-server on a free loopback port with its own data
// directory and stops it when the test ends. extra are more config
// arguments such as "--appendonly", "yes". A port taken between choosing
// it and binding it (another process, or a cluster node's bus port at
// port+10000) is retried on another port.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	bin := Binary(tb, "redis-server")
	cluster := false
	for _, a := range extra {
		cluster = cluster || a == "--cluster-enabled"
	}
	var last error
	for range 5 {
		dir := tb.TempDir()
		port := FreePort(tb)
		if cluster && (port > 55535 || !portFree(port+10000)) {
			continue
		}
		args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"}, extra...)
		s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, args: append([]string{bin}, args...)}
		s.URL = "redis://" + s.Addr
		if last = s.launch(); last == nil {
			tb.Cleanup(func() { s.Stop() })
			return s
		}
	}
	tb.Fatalf("redistest: %v", last)
	return nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (s *Server) start(tb testing.TB) {
	tb.Helper()
	if err := s.launch(); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
}

// launch starts the process and waits until it answers PING; a process
// that exits first (a port already bound) is reported at once.
func (s *Server) launch() error {
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	logf, err := os.Create(filepath.Join(s.Dir, "redis.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	cmd := s.cmd
	go func() { cmd.Wait(); close(exited) }()
	s.exited = exited
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.cmd = nil
			return fmt.Errorf("redis-server on %s exited at start; log:\n%s", s.Addr, b)
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond); err == nil {
			fmt.Fprintf(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	return fmt.Errorf("redis-server on %s did not answer within 10s; log:\n%s", s.Addr, b)
}

// Stop kills the server (like a crash: no final save).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart starts the server again on the same port and directory.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	s.start(tb)
}
