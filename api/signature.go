package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Webhook authentication modes (--webhook-auth).
const (
	AuthSecret    = "secret"    // x-webhook-secret only
	AuthSignature = "signature" // Standard Webhooks v1 signatures only
	AuthAny       = "any"       // a signature when its headers are present, else the secret
)

// signatureTolerance is how far webhook-timestamp may be from now.
const signatureTolerance = 5 * time.Minute

// WebhookKeys splits the configured secret list: entries that start with
// "whsec_" are Standard Webhooks signing keys (base64 after the prefix),
// the others are shared secrets for x-webhook-secret.
func WebhookKeys(list []string) (secrets []string, signing [][]byte, err error) {
	for _, s := range list {
		if b64, ok := strings.CutPrefix(s, "whsec_"); ok {
			k, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(k) == 0 {
				return nil, nil, fmt.Errorf("webhook signing key %q…: not base64 after whsec_", s[:min(len(s), 10)])
			}
			signing = append(signing, k)
			continue
		}
		secrets = append(secrets, s)
	}
	return secrets, signing, nil
}

var (
	errSigHeaders  = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	errSigTime     = errors.New("webhook-timestamp is not a Unix time within 5 minutes of now")
	errSigForm     = errors.New("webhook-signature holds no v1 signature (v1,<base64 of 32 bytes>)")
	errSigMismatch = errors.New("no webhook-signature matches the body")
)

// signatureHeaders checks what of a Standard Webhooks v1 signature can be
// checked without the body: webhook-id, webhook-timestamp within the
// tolerance, and at least one well-formed v1 signature. A request that
// fails it is refused before its body is read.
func signatureHeaders(h *fasthttp.RequestHeader, now time.Time) (id, ts, sigs []byte, err error) {
	id, ts, sigs = h.Peek("webhook-id"), h.Peek("webhook-timestamp"), h.Peek("webhook-signature")
	if len(id) == 0 || len(ts) == 0 || len(sigs) == 0 {
		return nil, nil, nil, errSigHeaders
	}
	sec, err := strconv.ParseInt(string(ts), 10, 64)
	if err != nil {
		return nil, nil, nil, errSigTime
	}
	if d := now.Sub(time.Unix(sec, 0)); d > signatureTolerance || d < -signatureTolerance {
		return nil, nil, nil, errSigTime
	}
	var sig [sha256.Size]byte
	found := false
	eachV1Signature(sigs, &sig, func() { found = true })
	if !found {
		return nil, nil, nil, errSigForm
	}
	return id, ts, sigs, nil
}

// eachV1Signature decodes every well-formed "v1,<base64>" entry of the
// space-separated list sigs into *sig and calls fn; the others are
// skipped.
func eachV1Signature(sigs []byte, sig *[sha256.Size]byte, fn func()) {
	var got [sha256.Size + 1]byte
	for _, vs := range strings.Fields(string(sigs)) {
		v, b64, found := strings.Cut(vs, ",")
		if !found || v != "v1" || len(b64) != 44 { // base64 of 32 bytes
			continue
		}
		n, err := base64.StdEncoding.Decode(got[:], []byte(b64))
		if err != nil || n != sha256.Size {
			continue
		}
		copy(sig[:], got[:n])
		fn()
	}
}

// verifySignature checks the Standard Webhooks v1 headers against every
// signing key and returns the webhook-id. Every candidate signature is
// compared with every key in constant time.
func verifySignature(h *fasthttp.RequestHeader, body []byte, keys [][]byte, now time.Time) (string, error) {
	id, ts, sigs, err := signatureHeaders(h, now)
	if err != nil {
		return "", err
	}
	var want, got [sha256.Size]byte
	ok := 0
	for _, key := range keys {
		m := hmac.New(sha256.New, key)
		m.Write(id)
		m.Write([]byte{'.'})
		m.Write(ts)
		m.Write([]byte{'.'})
		m.Write(body)
		m.Sum(want[:0])
		eachV1Signature(sigs, &got, func() {
			if hmac.Equal(got[:], want[:]) {
				ok = 1
			}
		})
	}
	if ok != 1 {
		return "", errSigMismatch
	}
	return string(id), nil
}
