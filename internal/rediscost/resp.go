package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// serverConn is a bare RESP connection for the server-level commands the
// driver reads figures with (INFO, DBSIZE, CONFIG GET). The events go
// through redisstore only; this connection never touches a key, so it
// keeps working whatever the data model.
type serverConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialServer(addr string, timeout time.Duration) (*serverConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &serverConn{c: c, r: bufio.NewReader(c)}, nil
}

func (s *serverConn) Close() error { return s.c.Close() }

// do sends one command and returns its reply: a string for simple and
// bulk strings, int64, []any, or an error for an error reply.
func (s *serverConn) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := s.c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return nil, err
	}
	if _, err := s.c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return s.read()
}

func (s *serverConn) read() (any, error) {
	line, err := s.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(s.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = s.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// commandCalls returns the calls of every command so far, from INFO
// commandstats (commands that scripts run included).
func (s *serverConn) commandCalls() (map[string]int64, error) {
	v, err := s.do("INFO", "commandstats")
	if err != nil {
		return nil, err
	}
	text, _ := v.(string)
	out := map[string]int64{}
	for _, line := range strings.Split(text, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if n, ok := strings.CutPrefix(f, "calls="); ok {
				out[name], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	return out, nil
}

// info returns one field of INFO (e.g. "redis_version"), "" if absent.
func (s *serverConn) info(field string) (string, error) {
	v, err := s.do("INFO", "server")
	if err != nil {
		return "", err
	}
	text, _ := v.(string)
	for _, line := range strings.Split(text, "\r\n") {
		if val, ok := strings.CutPrefix(line, field+":"); ok {
			return val, nil
		}
	}
	return "", nil
}

// config returns the value of one configuration parameter.
func (s *serverConn) config(name string) (string, error) {
	v, err := s.do("CONFIG", "GET", name)
	if err != nil {
		return "", err
	}
	if kv, ok := v.([]any); ok && len(kv) == 2 {
		val, _ := kv[1].(string)
		return val, nil
	}
	return "", fmt.Errorf("CONFIG GET %s: unexpected reply %v", name, v)
}
