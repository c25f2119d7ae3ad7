package quickdesktest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestCaptureUnchanged: the copy is the capture (its SHA-256), and every
// delivery's X-Webhook-Signature is the HMAC-SHA256 of its body with
// Secret, so the bodies are the bytes QuickDesk signed.
func TestCaptureUnchanged(t *testing.T) {
	sum := sha256.Sum256(Raw())
	if got := hex.EncodeToString(sum[:]); got != Sum {
		t.Fatalf("deliveries.jsonl has SHA-256 %s, want %s (the capture of shared/quickdesk/)", got, Sum)
	}
	ds := Deliveries()
	if len(ds) != 6 {
		t.Fatalf("%d deliveries, want 6", len(ds))
	}
	for i, d := range ds {
		m := hmac.New(sha256.New, []byte(Secret))
		m.Write([]byte(d.Body))
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		if got := d.Headers["X-Webhook-Signature"]; got != want {
			t.Errorf("delivery %d (%s): X-Webhook-Signature %q, HMAC of the body %q", i, d.Event(), got, want)
		}
		if d.Event() == "" {
			t.Errorf("delivery %d has no event name", i)
		}
	}
}
