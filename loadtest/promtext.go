package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// sample is one sample of the Prometheus text exposition format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parsePromText reads the Prometheus text format (0.0.4; OpenMetrics text
// also parses, its "# EOF" being a comment) and returns the samples whose
// metric name keep accepts (all when keep is nil). HELP/TYPE lines and
// timestamps are skipped. It is a small hand parser so the verifier needs
// nothing beyond the standard library; it returns an error naming the line
// of the first malformed sample.
func parsePromText(r io.Reader, keep func(name string) bool) ([]sample, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []sample
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSampleLine(line, keep)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w: %q", n, err, line)
		}
		if s != nil {
			out = append(out, *s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

func isNameChar(c byte, first bool) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

// parseSampleLine parses `name{l="v",...} value [timestamp]`; it returns
// nil, nil for a sample keep rejects.
func parseSampleLine(line string, keep func(string) bool) (*sample, error) {
	i := 0
	for i < len(line) && isNameChar(line[i], i == 0) {
		i++
	}
	if i == 0 {
		return nil, fmt.Errorf("bad metric name")
	}
	s := &sample{name: line[:i]}
	if keep != nil && !keep(s.name) {
		return nil, nil
	}
	rest := line[i:]
	if strings.HasPrefix(rest, "{") {
		labels, after, err := parseLabels(rest[1:])
		if err != nil {
			return nil, err
		}
		s.labels, rest = labels, after
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return nil, fmt.Errorf("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return nil, fmt.Errorf("bad value")
	}
	s.value = v
	return s, nil
}

// parseLabels parses the inside of {...} and returns what follows the '}'.
func parseLabels(s string) (map[string]string, string, error) {
	labels := make(map[string]string)
	for {
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		j := 0
		for j < len(s) && isNameChar(s[j], j == 0) && s[j] != ':' {
			j++
		}
		if j == 0 {
			return nil, "", fmt.Errorf("bad label name")
		}
		name := s[:j]
		s = strings.TrimLeft(s[j:], " \t")
		if !strings.HasPrefix(s, "=") {
			return nil, "", fmt.Errorf("want = after label %s", name)
		}
		s = strings.TrimLeft(s[1:], " \t")
		if !strings.HasPrefix(s, `"`) {
			return nil, "", fmt.Errorf("want a quoted value for label %s", name)
		}
		var b strings.Builder
		k := 1
		closed := false
		for k < len(s) {
			c := s[k]
			if c == '"' {
				closed = true
				k++
				break
			}
			if c == '\\' && k+1 < len(s) {
				k++
				switch s[k] {
				case 'n':
					b.WriteByte('\n')
				case '\\', '"':
					b.WriteByte(s[k])
				default:
					b.WriteByte('\\')
					b.WriteByte(s[k])
				}
				k++
				continue
			}
			b.WriteByte(c)
			k++
		}
		if !closed {
			return nil, "", fmt.Errorf("unterminated value of label %s", name)
		}
		labels[name] = b.String()
		s = strings.TrimLeft(s[k:], " \t")
		if strings.HasPrefix(s, ",") {
			s = s[1:]
		} else if !strings.HasPrefix(s, "}") {
			return nil, "", fmt.Errorf("want , or } after label %s", name)
		}
	}
}
