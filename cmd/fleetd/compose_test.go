package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// composeConfig is the part of `docker-compose config`'s output the test reads.
type composeConfig struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Build *struct {
			Args map[string]string `yaml:"args"`
		} `yaml:"build"`
	} `yaml:"services"`
}

// TestComposeFile checks docker-compose.yml with docker-compose's own
// parser (`docker-compose config` validates the file against the compose
// schema and interpolates it; no Docker engine is needed), then asserts
// the hardening: pinned images, required secrets, loopback ports, health
// checks and the start order they gate, the alert rules mounted.
func TestComposeFile(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatal("docker-compose not found in PATH: install it (scripts/ensure-deps.sh does: apt-get install docker-compose)")
	}
	root := repoRoot(t)
	config := func(env ...string) (string, error) {
		cmd := exec.Command(bin, "-f", filepath.Join(root, "docker-compose.yml"), "config")
		cmd.Dir = root
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The secrets are required: no silent placeholder.
	for missing, env := range map[string][]string{
		"FLEETD_WEBHOOK_SECRET":  {"GRAFANA_ADMIN_PASSWORD=pw"},
		"GRAFANA_ADMIN_PASSWORD": {"FLEETD_WEBHOOK_SECRET=s3cret"},
	} {
		if out, err := config(env...); err == nil || !strings.Contains(out, missing) {
			t.Errorf("docker-compose config without %s: %v\n%s\nwant a refusal naming it", missing, err, out)
		}
	}
	out, err := config("FLEETD_WEBHOOK_SECRET=s3cret-from-env", "GRAFANA_ADMIN_PASSWORD=pw-from-env")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var c composeConfig
	if err := yaml.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("docker-compose config output: %v\n%s", err, out)
	}
	t.Logf("docker-compose config: %d services, valid", len(c.Services))
	for _, name := range []string{"redis", "fleetd", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	pinned := regexp.MustCompile(`^[a-z0-9./_-]+:v?\d+\.\d+\.\d+$`)
	for name, s := range c.Services {
		if s.Image != "fleetd:local" && !pinned.MatchString(s.Image) {
			t.Errorf("%s: image %q is not pinned to a full version", name, s.Image)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q beyond the loopback", name, p)
			}
		}
	}
	fl := c.Services["fleetd"]
	if fl.Environment["FLEETD_WEBHOOK_SECRET"] != "s3cret-from-env" {
		t.Errorf("fleetd's webhook secret = %q, want the environment's", fl.Environment["FLEETD_WEBHOOK_SECRET"])
	}
	if !slices.Contains(fl.Healthcheck.Test, "healthcheck") || !strings.HasSuffix(fl.Healthcheck.Test[1], "fleetd") {
		t.Errorf("fleetd healthcheck = %v, want fleetd healthcheck", fl.Healthcheck.Test)
	}
	if fl.Build == nil || fl.Build.Args["VERSION"] == "" || fl.Build.Args["COMMIT"] == "" {
		t.Errorf("fleetd build args = %+v, want VERSION and COMMIT for the image's ldflags and labels", fl.Build)
	}
	if fl.DependsOn["redis"].Condition != "service_healthy" || c.Services["prometheus"].DependsOn["fleetd"].Condition != "service_healthy" {
		t.Errorf("start order: fleetd waits for redis %q, prometheus for fleetd %q; want service_healthy",
			fl.DependsOn["redis"].Condition, c.Services["prometheus"].DependsOn["fleetd"].Condition)
	}
	if len(c.Services["redis"].Healthcheck.Test) == 0 {
		t.Error("redis has no healthcheck for fleetd to wait on")
	}
	if got := c.Services["grafana"].Environment["GF_SECURITY_ADMIN_PASSWORD"]; got != "pw-from-env" {
		t.Errorf("Grafana's admin password = %q, want the environment's", got)
	}
	alertsMounted := false
	for _, v := range c.Services["prometheus"].Volumes {
		src, _, _ := strings.Cut(v, ":")
		if strings.HasPrefix(src, "/") {
			if _, err := os.Stat(src); err != nil {
				t.Errorf("prometheus mounts %s, which does not exist", src)
			}
		}
		alertsMounted = alertsMounted || strings.HasSuffix(src, "deploy/prometheus/alerts.yml") && strings.Contains(v, ":/etc/prometheus/alerts.yml")
	}
	promCfg, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !alertsMounted || !strings.Contains(string(promCfg), "- /etc/prometheus/alerts.yml") {
		t.Error("the compose Prometheus does not load deploy/prometheus/alerts.yml")
	}
}
