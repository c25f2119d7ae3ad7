package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cluster is a real Redis Cluster of redis-server processes on loopback:
// three masters with one replica each.
type Cluster struct {
	Nodes []*Server
}

// Addrs returns the host:port of every node.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Seeds returns the node addresses comma-separated, as FLEETD_REDIS_CLUSTER wants.
func (c *Cluster) Seeds() string { return strings.Join(c.Addrs(), ",") }

// StartCluster starts 6 redis-server nodes in cluster mode and joins them
// with redis-cli --cluster create (3 masters, 1 replica each). The cluster
// is stopped when the test ends.
func StartCluster(tb testing.TB, extra ...string) *Cluster {
	tb.Helper()
	Binary(tb, "redis-cli")
	c := &Cluster{}
	for range 6 {
		n := Start(tb, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--appendonly", "no"}, extra...)...)
		c.Nodes = append(c.Nodes, n)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(tb, 30*time.Second)
	return c
}

// WaitOK waits until every node reports cluster_state:ok and all 16384
// slots are served.
func (c *Cluster) WaitOK(tb testing.TB, d time.Duration) {
	tb.Helper()
	waitFor(tb, d, "cluster ok", func() bool {
		return c.everyNode(func(n *Server) bool {
			info, err := n.Do("CLUSTER", "INFO")
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384")
		})
	})
}

// WaitRole waits until n reports role ("master" or "slave").
func (n *Server) WaitRole(tb testing.TB, role string, d time.Duration) {
	tb.Helper()
	waitFor(tb, d, n.Addr+" is "+role, func() bool {
		got, err := n.Do("ROLE")
		return err == nil && strings.HasPrefix(got, role+"\n")
	})
}

// WaitReplicasInSync waits until every running replica is connected to its
// master, so that a master killed next has a replica able to take over.
func (c *Cluster) WaitReplicasInSync(tb testing.TB, d time.Duration) {
	tb.Helper()
	waitFor(tb, d, "replicas in sync", func() bool {
		return c.everyNode(func(n *Server) bool {
			// A replica's ROLE is: slave, master host, master port, state, offset.
			role, err := n.Do("ROLE")
			f := strings.Split(role, "\n")
			return err == nil && (f[0] != "slave" || len(f) > 3 && f[3] == "connected")
		})
	})
}

// everyNode reports whether ok holds for every node not stopped on purpose.
func (c *Cluster) everyNode(ok func(*Server) bool) bool {
	for _, n := range c.Nodes {
		if n.cmd != nil && !ok(n) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: not %s after %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Masters returns the nodes that are masters now.
func (c *Cluster) Masters(tb testing.TB) []*Server {
	tb.Helper()
	var out []*Server
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		info, err := n.Do("ROLE")
		if err == nil && strings.HasPrefix(info, "master") {
			out = append(out, n)
		}
	}
	return out
}

// FlushAll empties every master (replicas follow).
func (c *Cluster) FlushAll(tb testing.TB) {
	tb.Helper()
	for _, n := range c.Masters(tb) {
		if _, err := n.Do("FLUSHALL"); err != nil {
			tb.Fatalf("redistest: flushall %s: %v", n.Addr, err)
		}
	}
}

var respMu sync.Mutex

// Do sends one command over a fresh connection and returns the reply as
// text (arrays are joined by newlines), for test plumbing only.
func (s *Server) Do(args ...string) (string, error) {
	respMu.Lock()
	defer respMu.Unlock()
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		parts := make([]string, 0, n)
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
