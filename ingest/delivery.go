package ingest

import (
	"strconv"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// DecodeDelivery is Decode for one webhook delivery: it decodes body into
// a slice sized from the body, and gives the events that carry no id of
// their own the delivery id the request was signed with (a Standard
// Webhooks webhook-id; "" for an unsigned request): the id itself for a
// single event, "<id>:<i>" for event i of a batch (SPEC §3). body is
// modified and referenced as for Decode.
//
// Errors are EINVALID: a malformed deliveryID (before anything is
// decoded), a derived id too long to be valid, or any error of Decode.
// Nothing of a rejected delivery is to be applied; the events decoded
// before the error are returned, for counting.
func DecodeDelivery(body []byte, deliveryID string, now time.Time, maxBatch int) ([]fleet.Event, error) {
	if deliveryID != "" && !fleet.ValidID(deliveryID) {
		return nil, fleet.Errorf(fleet.EINVALID, "webhook-id must be 1-128 characters of [A-Za-z0-9._:@-]")
	}
	events, err := Decode(body, make([]fleet.Event, 0, eventsHint(body, maxBatch)), now, maxBatch)
	if err == nil && deliveryID != "" {
		err = assignDeliveryIDs(events, deliveryID)
	}
	return events, err
}

// assignDeliveryIDs gives events without an id the signed delivery id: the
// webhook-id itself for a single event, "<webhook-id>:<i>" in a batch.
func assignDeliveryIDs(events []fleet.Event, id string) error {
	if len(events) == 1 {
		if events[0].ID == "" {
			events[0].ID = id
		}
		return nil
	}
	for i := range events {
		if events[i].ID == "" {
			events[i].ID = id + ":" + strconv.Itoa(i)
			if !fleet.ValidID(events[i].ID) {
				return fleet.Errorf(fleet.EINVALID, "event %d: webhook-id too long to derive the delivery id %q", i, events[i].ID)
			}
		}
	}
	return nil
}

// eventsHint guesses how many events a body holds (an event object takes
// at least ~40 bytes), so a batch is decoded into one allocation instead
// of a growing slice.
func eventsHint(body []byte, maxBatch int) int {
	if len(body) == 0 || body[0] != '[' {
		return 1
	}
	return min(maxBatch, len(body)/40+1)
}
