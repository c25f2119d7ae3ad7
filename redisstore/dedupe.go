package redisstore

import (
	"crypto/sha256"
)

// De-duplication by delivery id (lua/dedupe.lua): what the workspace
// scripts keep of an id.

// deliveryDigest is what dedupe.lua keeps of a delivery id: the first 12
// bytes (96 bits) of its SHA-256, so that ids of any length cost the same
// and two ids of one workspace and day collide with a chance of about
// n²/2⁹⁷ (1e-11 at a billion ids). "" stays "" (no id, no de-duplication).
func deliveryDigest(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return string(sum[:12])
}
