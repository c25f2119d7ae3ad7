package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
)

// healthcheckCmd asks a running fleetd's /readyz and exits 0 only on a 200:
// the container healthcheck of an image without a shell or curl. Its --addr
// is serve's, with the same env twin (FLEETD_ADDR), so in a container that
// sets FLEETD_ADDR for serve a bare `fleetd healthcheck` checks that port.
func healthcheckCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.New("fleetd healthcheck", "FLEETD_HEALTHCHECK_", stdout)
	fs.Synopsis = "fleetd healthcheck [--addr A] [--timeout D]"
	fs.About = `Exits 0 if the fleetd listening on A answers GET /readyz with 200 within the
timeout, 1 otherwise (printing why on stderr). A host left out or unspecified
(":8080", "0.0.0.0:8080", "[::]:8080") means this machine's loopback.`
	var addr string
	var timeout time.Duration
	fs.StringVar(&addr, "addr", ":8080", "listen address of the fleetd to check (as given to serve)")
	fs.DurationVar(&timeout, "timeout", 2*time.Second, "bound of the whole check")
	fs.Shared("addr")
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fs.Usagef("--addr %q: %v", addr, err)
	}
	target := localURL(addr) + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		json.Unmarshal(body, &e)
		return fmt.Errorf("healthcheck: %s answered %d: %s", target, resp.StatusCode, e.Message)
	}
	fmt.Fprintf(stdout, "ready: %s answered 200\n", target)
	return nil
}

// localURL turns a listen address into the base URL that reaches it from
// this machine: an unspecified host (":8080", "0.0.0.0", "[::]") is the
// loopback.
func localURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
